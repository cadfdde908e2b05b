"""reference.py - the fp8moe layer in plain PyTorch, step by step as SPEC
sections 2, 4 and 5.1 state it: the yardstick of test_torch.py, and a
readable statement of the math for anyone porting a model.

    ids, weights, ambiguous = route(logits, bias, method, top_k, n_group, topk_group, scale)
    out = moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale,
              ids, weights, local_expert_offset)          # bfloat16 [T, H]

Dequantize (1x128 activation scales, 128x128 weight scales), GEMM1 in fp32
(IEEE: TF32 off), SwiGLU in fp32 straight from GEMM1, requantize the
activation to fp8 e4m3 per 128 columns with scale = max(amax / 448, FLT_MIN),
GEMM2 in fp32, combine sum_k w_k * y_k in slot order in fp32, round to
bfloat16. Slots whose expert is not in [local_expert_offset,
local_expert_offset + E_loc) contribute nothing.

The 0.3 fields (SPEC section 5.1), all optional:
  - swiglu_alpha / swiglu_beta / swiglu_limit, fp32 [E_loc] (FlashInfer's
    gemm1_alpha / gemm1_beta / gemm1_clamp_limit): with gate = GEMM1 rows
    [I, 2I) and up = rows [0, I), g = min(gate, limit),
    u = clamp(up, -limit, limit), a = g * sigmoid(alpha * g) * (u + beta);
    the defaults (1, 0, no limit) give silu(gate) * up;
  - shared = (w1, w1_scale, w2, w2_scale), each with a leading S: every token
    takes each shared expert with weight 1 and the default SwiGLU; their
    outputs are added after the routed slots, s = 0..S-1, before the bf16
    rounding (a token with no local routed slot still gets them).

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


def swiglu(gate, up, alpha=None, beta=None, limit=None):
    """The gated activation of SPEC section 5.1, in fp32: g = min(gate, limit),
    u = clamp(up, -limit, limit), g * sigmoid(alpha * g) * (u + beta),
    written as fp8moe_swiglu() writes it (g / (1 + exp(-alpha g)) * (u + beta)).
    alpha, beta, limit: None (1, 0, no clamp) or scalars / 0-d tensors."""
    g, u = gate, up
    if limit is not None:
        g = torch.minimum(g, limit) if torch.is_tensor(limit) else g.clamp(max=limit)
        u = torch.maximum(torch.minimum(u, limit), -limit) if torch.is_tensor(limit) else u.clamp(-limit, limit)
    z = g if alpha is None else alpha * g
    u = u if beta is None else u + beta
    return g / (1.0 + torch.exp(-z)) * u


def _expert(x, w1, w1_scale, w2, w2_scale, alpha=None, beta=None, limit=None, stats=None):
    """One expert on the rows x (fp32 [n, H], dequantized): SPEC section 2
    steps 2-5 -> fp32 [n, H]. stats (a dict or None) counts the clamped
    gate and up values."""
    I = w1.shape[0] // 2
    g = x @ dequantize_weight(w1, w1_scale).t()  # [n, 2I]
    up, gate = g[:, :I], g[:, I:]
    if stats is not None and limit is not None:
        stats["clamped_gate"] = stats.get("clamped_gate", 0) + int((gate > limit).sum())
        stats["clamped_up"] = stats.get("clamped_up", 0) + int((up.abs() > limit).sum())
        stats["values"] = stats.get("values", 0) + up.numel()
    a = swiglu(gate, up, alpha, beta, limit)
    aq, ascale = quantize_blocks(a)
    ad = aq.float() * ascale.repeat_interleave(BLOCK, dim=1)
    return ad @ dequantize_weight(w2, w2_scale).t()


def moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale, ids, weights, local_expert_offset=0,
        swiglu_alpha=None, swiglu_beta=None, swiglu_limit=None, shared=None, stats=None):
    """SPEC sections 2 and 5.1 -> bfloat16 [T, H]. ids int [T, K] global
    expert ids, weights [T, K] (used as fp32); swiglu_*: fp32 [E_loc] or
    None; shared: (w1 [S, 2I, H], w1_scale, w2 [S, H, I], w2_scale) or None;
    stats: a dict that receives how many SwiGLU inputs the limits clamped."""
    T, H = hidden_states.shape
    E_loc = w1.shape[0]
    K = ids.shape[1]
    x = hidden_states.float() * hidden_states_scale.t().repeat_interleave(BLOCK, dim=1)
    local = ids.long() - local_expert_offset
    is_local = (local >= 0) & (local < E_loc)
    y = torch.zeros(T, K, H, dtype=torch.float32, device=x.device)
    for e in torch.unique(local[is_local]).tolist():
        t_idx, k_idx = torch.nonzero(local == e, as_tuple=True)
        y[t_idx, k_idx] = _expert(x[t_idx], w1[e], w1_scale[e], w2[e], w2_scale[e],
                                  None if swiglu_alpha is None else swiglu_alpha[e].float(),
                                  None if swiglu_beta is None else swiglu_beta[e].float(),
                                  None if swiglu_limit is None else swiglu_limit[e].float(), stats)
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    w = weights.float()
    for k in range(K):  # slot order
        out = out + torch.where(is_local[:, k : k + 1], w[:, k : k + 1] * y[:, k], torch.zeros_like(out))
    if shared is not None:
        sw1, sw1s, sw2, sw2s = shared
        for s in range(sw1.shape[0]):  # index order, weight 1, default SwiGLU
            out = out + _expert(x, sw1[s], sw1s[s], sw2[s], sw2s[s])
    return out.to(torch.bfloat16)


def layer(routing_logits, routing_bias, hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale,
          top_k, n_group, topk_group, local_expert_offset, routed_scaling_factor, routing_method_type,
          swiglu_alpha=None, swiglu_beta=None, swiglu_limit=None, shared=None, stats=None):
    """The whole non-routed layer: route, then moe. Returns (out, ambiguous)."""
    ids, weights, ambiguous = route(routing_logits, routing_bias, routing_method_type, top_k, n_group or 0,
                                    topk_group or 0, routed_scaling_factor or 0.0)
    out = moe(hidden_states, hidden_states_scale, w1, w1_scale, w2, w2_scale, ids, weights, local_expert_offset,
              swiglu_alpha, swiglu_beta, swiglu_limit, shared, stats)
    return out, ambiguous
