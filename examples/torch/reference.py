"""reference.py - the fp8moe layer in plain PyTorch, step by step as SPEC
sections 2 and 4 state it: the yardstick of test_torch.py, and a readable
statement of the math for anyone porting a model.

    ids, weights, ambiguous = route(logits, bias, method, top_k, n_group, topk_group, scale)
    out = moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale,
              ids, weights, local_expert_offset)          # bfloat16 [T, H]

Dequantize (1x128 activation scales, 128x128 weight scales), GEMM1 in fp32
(IEEE: TF32 off), SwiGLU in fp32 straight from GEMM1, requantize the
activation to fp8 e4m3 per 128 columns with scale = max(amax / 448, FLT_MIN),
GEMM2 in fp32, combine sum_k w_k * y_k in slot order in fp32, round to
bfloat16. Slots whose expert is not in [local_expert_offset,
local_expert_offset + E_loc) contribute nothing.

Routing: ties go to the lower expert index (a stable sort). route() also
flags tokens whose selection is ambiguous - the K-th and (K+1)-th keys (or,
for DeepSeekV3 groups, the group scores around the cut) closer than a
relative 1e-5 - where a GPU that rounds differently in the last bit may
legitimately choose another expert (SPEC section 6 asks for the same experts
only when there are no ties within fp32 rounding).
"""

import torch

FLT_MIN = torch.finfo(torch.float32).tiny
E4M3_MAX = 448.0
BLOCK = 128


def use_ieee_fp32_matmul():
    """fp32 matmuls in full fp32 (no TF32), with the API this PyTorch has."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False


def quantize_blocks(a):
    """fp32 [n, C] -> (float8_e4m3fn [n, C], fp32 scales [n, C/128]) with
    scale = max(amax / 448, FLT_MIN), q = sat_e4m3(a / scale), round to
    nearest even."""
    n, C = a.shape
    blocks = a.view(n, C // BLOCK, BLOCK)
    amax = blocks.abs().amax(dim=-1)
    # divide by a tensor: PyTorch turns a division by a Python number into a
    # multiplication by its reciprocal, which is not the IEEE quotient
    scale = torch.clamp(amax / torch.full_like(amax, E4M3_MAX), min=FLT_MIN)
    q = torch.clamp(blocks / scale.unsqueeze(-1), -E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.view(n, C), scale


def quantize_activations(x):
    """bfloat16 [T, H] -> (float8_e4m3fn [T, H], fp32 [H/128, T]), the
    layout hidden_states_scale has."""
    q, scale = quantize_blocks(x.float())
    return q, scale.t().contiguous()


def dequantize_weight(w, s):
    """fp8 [N, K] with fp32 [N/128, K/128] block scales -> fp32 [N, K]."""
    return w.float() * s.repeat_interleave(BLOCK, dim=0).repeat_interleave(BLOCK, dim=1)


def _top(key, k):
    """Indices of the k largest keys per row, ties to the lower index, and
    the sorted keys."""
    values, order = torch.sort(key, dim=-1, descending=True, stable=True)
    return order[:, :k], values


def _near(a, b, tol):
    return (a - b).abs() <= tol * torch.maximum(a.abs(), b.abs()).clamp(min=1e-30)


def route(logits, bias, method, top_k, n_group=0, topk_group=0, routed_scaling_factor=0.0, tol=1e-5):
    """SPEC section 4 -> (ids int64 [T, K], weights fp32 [T, K], ambiguous
    bool [T])."""
    l = logits.float()
    l = torch.where(torch.isnan(l), torch.full_like(l, float("-inf")), l)
    T, E = l.shape
    K = top_k
    ambiguous = torch.zeros(T, dtype=torch.bool, device=l.device)
    if method == 2:  # DeepSeekV3
        s = 1.0 / (1.0 + torch.exp(-l))
        b = s + (bias.float() if bias is not None else 0.0)
        key = b
        if n_group > 1:
            size = E // n_group
            groups = b.view(T, n_group, size)
            gscore = torch.sort(groups, dim=-1, descending=True).values[..., : min(2, size)].sum(-1)
            keep, gsorted = _top(gscore, topk_group)
            if topk_group < n_group:
                ambiguous |= _near(gsorted[:, topk_group - 1], gsorted[:, topk_group], tol)
            mask = torch.zeros(T, n_group, dtype=torch.bool, device=l.device).scatter_(1, keep, True)
            key = b.masked_fill(~mask.repeat_interleave(size, dim=1), float("-inf"))
        ids, ksorted = _top(key, K)
        sel = s.gather(1, ids)
        scale = routed_scaling_factor if routed_scaling_factor else 1.0
        weights = sel * scale / (sel.sum(-1, keepdim=True) + 1e-20)
    elif method == 1:  # Renormalize: top-K of logits, softmax over them
        ids, ksorted = _top(l, K)
        weights = torch.softmax(l.gather(1, ids), dim=-1)
    elif method in (0, 4):  # Default / RenormalizeNaive: top-K of softmax
        p = torch.softmax(l, dim=-1)
        ids, ksorted = _top(p, K)
        weights = p.gather(1, ids)
        if method == 4:
            weights = weights / weights.sum(-1, keepdim=True)
    elif method == 5:  # TopK: the raw logits
        ids, ksorted = _top(l, K)
        weights = l.gather(1, ids)
    elif method == 3:  # Llama4: K = 1, sigmoid of the best logit
        assert K == 1, "Llama4 routing takes top_k = 1"
        ids, ksorted = _top(l, 1)
        weights = 1.0 / (1.0 + torch.exp(-l.gather(1, ids)))
    else:
        raise ValueError(f"unknown routing method {method}")
    if K < E:
        ambiguous |= _near(ksorted[:, K - 1], ksorted[:, K], tol)
    return ids, weights, ambiguous


def moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale, ids, weights, local_expert_offset=0):
    """SPEC section 2 -> bfloat16 [T, H]. ids int [T, K] global expert ids,
    weights [T, K] (used as fp32)."""
    T, H = hidden_states.shape
    E_loc, two_I, _ = w1.shape
    I = two_I // 2
    K = ids.shape[1]
    x = hidden_states.float() * hidden_states_scale.t().repeat_interleave(BLOCK, dim=1)
    local = ids.long() - local_expert_offset
    is_local = (local >= 0) & (local < E_loc)
    y = torch.zeros(T, K, H, dtype=torch.float32, device=x.device)
    for e in torch.unique(local[is_local]).tolist():
        t_idx, k_idx = torch.nonzero(local == e, as_tuple=True)
        g = x[t_idx] @ dequantize_weight(w1[e], w1_scale[e]).t()  # [n, 2I]
        up, gate = g[:, :I], g[:, I:]
        a = gate / (1.0 + torch.exp(-gate)) * up                 # silu(gate) * up
        aq, ascale = quantize_blocks(a)
        ad = aq.float() * ascale.repeat_interleave(BLOCK, dim=1)
        y[t_idx, k_idx] = ad @ dequantize_weight(w2[e], w2_scale[e]).t()
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    w = weights.float()
    for k in range(K):  # slot order
        out = out + torch.where(is_local[:, k : k + 1], w[:, k : k + 1] * y[:, k], torch.zeros_like(out))
    return out.to(torch.bfloat16)


def layer(routing_logits, routing_bias, hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale,
          top_k, n_group, topk_group, local_expert_offset, routed_scaling_factor, routing_method_type):
    """The whole non-routed layer: route, then moe. Returns (out, ambiguous)."""
    ids, weights, ambiguous = route(routing_logits, routing_bias, routing_method_type, top_k, n_group or 0,
                                    topk_group or 0, routed_scaling_factor or 0.0)
    out = moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale, ids, weights, local_expert_offset)
    return out, ambiguous
