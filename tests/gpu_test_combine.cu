/* tests/gpu_test_combine.cu - combine.cuh against a CPU weighted sum.
 *
 * out[t, h] = bf16( sum over the token's slots k = 0..K-1 in slot order, where
 * slot_row >= 0, of w_k * y[row, h], then + y[shared row (s, t), h] for the S
 * shared experts in order ), the sum in fp32, rounded with
 * fp8moe_bf16_from_float (which gpu_test_numeric pins to the device
 * conversion). Each product-and-add may be fused or not (the CPU model does
 * both, in slot order, and an element must equal one of the two), but the
 * order is fixed: y spans 2^-20..2^30 with both signs, so a sum in another
 * order rounds differently, and a dedicated case sums to 1 in slot order
 * (shared experts last) and to 0 in the reverse order.
 *  - A slot with slot_row = -1 contributes nothing: its weight is a NaN, and
 *    every row of y no slot points at is NaN, so a stray read shows.
 *  - A token with no local slot (and no shared expert) gets exact zeros.
 *  - The output is poisoned first; every element must be written, guard
 *    words past [T, H] must stay poisoned; T = 0 writes nothing.
 * Shapes: K from 1 to 16, H from 128 to 7168 (partial column blocks), T = 0,
 * 1, odd and large T, no / some / every slot local, 0 to 8 shared experts.
 * Fresh random data every run: the seed is printed, FP8MOE_SEED=<n> replays
 * one.
 */
#include "gpu_util.h"

#include <fp8moe/numeric.h>
#include <fp8moe/detail/combine.cuh>

#include <algorithm>
#include <stdio.h>
#include <vector>

TestSuite(gpu_combine, .init = fp8moe_test_require_gpu);

namespace {

const uint16_t Y_UNUSED = 0x7FC1u; /* a bf16 NaN: rows of y no slot points at */
const int GUARD = 64;              /* poisoned bf16 past the output */

/* ---- the stage under test ------------------------------------------------ */

struct combine_bufs {
  int T, S;
  const int *slot_row;     /* [T*K] */
  const float *slot_weight;
  const uint16_t *y;       /* bf16 [rows, H] */
  uint16_t *out;           /* bf16 [T, H] */
  const int *shared_row0;  /* device int: row of (shared 0, token 0), or NULL when S = 0 */
};

/* The only call of the launcher: a signature change is fixed here. */
template <int K, int H>
void run_combine(const combine_bufs &b, const char *what) {
  fp8moe::detail::combine_params p{};
  p.num_tokens = b.T;
  p.slot_row = b.slot_row;
  p.slot_weight = b.slot_weight;
  p.y = b.y;
  p.out = b.out;
  p.num_shared = b.S;
  p.shared_row0 = b.shared_row0;
  fp8moe_status st = fp8moe::detail::combine_launch<K, H>(p, 0);
  cr_assert_eq(st, FP8MOE_OK, "%s: combine_launch: %s", what, fp8moe_status_string(st));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
}

/* ---- cases --------------------------------------------------------------- */

enum y_kind { Y_NORMAL, Y_WIDE };

struct combine_case {
  int T, S;
  float p_local;   /* probability that a slot is local */
  y_kind yk;
};

/* A random bf16 value: N(0, 1), or sign * 2^(-20..30) * (1 + mantissa). */
uint16_t random_y(fp8moe_rng *r, y_kind k) {
  if (k == Y_NORMAL) return fp8moe_bf16_from_float(rng_normal(r));
  float v = ldexpf(1.0f + rng_uniform(r), (int)(rng_next(r) % 51) - 20);
  return fp8moe_bf16_from_float((rng_next(r) & 1) ? -v : v);
}

template <int K, int H>
void check_combine(fp8moe_rng *rng, const combine_case &c) {
  const int T = c.T, S = c.S;
  const size_t TK = (size_t)T * K;
  char what[200];
  snprintf(what, sizeof what, "K=%d H=%d T=%d S=%d p_local=%.2f y=%s", K, H, T, S, (double)c.p_local,
           c.yk == Y_WIDE ? "wide" : "normal");

  /* slots: local ones take the rows [0, n_local) in a random order (as the
   * permutation groups them by expert); the others -1 with a NaN weight */
  std::vector<int> slot_row(TK, -1);
  std::vector<float> slot_w(TK, NAN);
  std::vector<size_t> local_slots;
  for (size_t i = 0; i < TK; i++)
    if (rng_uniform(rng) < c.p_local) local_slots.push_back(i);
  const int n_local = (int)local_slots.size();
  std::vector<int> rows(n_local);
  for (int i = 0; i < n_local; i++) rows[i] = i;
  for (int i = n_local - 1; i > 0; i--) std::swap(rows[i], rows[rng_next(rng) % (uint64_t)(i + 1)]);
  for (int i = 0; i < n_local; i++) {
    slot_row[local_slots[i]] = rows[i];
    slot_w[local_slots[i]] = (rng_uniform(rng) - 0.3f) * 3.0f; /* fp32 weights, some negative */
  }
  /* shared rows after a gap of unused rows; more unused rows at the end */
  const int row0 = n_local + (int)(rng_next(rng) % 4);
  const size_t n_rows = (size_t)row0 + (size_t)S * T + 1 + rng_next(rng) % 3;
  std::vector<uint16_t> y(n_rows * H, Y_UNUSED);
  for (int i = 0; i < n_local; i++)
    for (int h = 0; h < H; h++) y[(size_t)i * H + h] = random_y(rng, c.yk);
  for (size_t i = (size_t)row0 * H; i < ((size_t)row0 + (size_t)S * T) * H; i++) y[i] = random_y(rng, c.yk);

  /* the CPU model, fused (fmaf) and unfused, in slot order */
  std::vector<uint16_t> want_fma((size_t)T * H), want_mul((size_t)T * H);
  std::vector<char> any(T, 0);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      float a = 0.0f, m = 0.0f;
      for (int k = 0; k < K; k++) {
        const int r = slot_row[(size_t)t * K + k];
        if (r < 0) continue;
        const float w = slot_w[(size_t)t * K + k], v = fp8moe_bf16_to_float(y[(size_t)r * H + h]);
        a = fmaf(w, v, a);
        volatile float prod = w * v; /* rounded on its own */
        m = m + prod;
        any[t] = 1;
      }
      for (int s = 0; s < S; s++) {
        const float v = fp8moe_bf16_to_float(y[((size_t)row0 + (size_t)s * T + t) * H + h]);
        a = a + v;
        m = m + v;
      }
      want_fma[(size_t)t * H + h] = fp8moe_bf16_from_float(a);
      want_mul[(size_t)t * H + h] = fp8moe_bf16_from_float(m);
    }

  /* device */
  int *d_row = dev_upload(slot_row.data(), TK);
  float *d_w = dev_upload(slot_w.data(), TK);
  uint16_t *d_y = dev_upload(y.data(), y.size());
  std::vector<uint16_t> out((size_t)T * H + GUARD, (uint16_t)FP8MOE_TEST_POISON_BF16);
  uint16_t *d_out = dev_upload(out.data(), out.size());
  int *d_row0 = dev_upload(&row0, 1);
  combine_bufs b = {T, S, d_row, d_w, d_y, d_out, S ? d_row0 : NULL};
  run_combine<K, H>(b, what);
  dev_download(out.data(), d_out, out.size());
  for (void *p : {(void *)d_row, (void *)d_w, (void *)d_y, (void *)d_out, (void *)d_row0}) CUDA_OK(cudaFree(p));

  for (int i = 0; i < GUARD; i++)
    cr_assert_eq(out[(size_t)T * H + i], FP8MOE_TEST_POISON_BF16, "%s: output written past [T, H] at +%d", what, i);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const size_t i = (size_t)t * H + h;
      const uint16_t g = out[i];
      cr_assert_neq(g, FP8MOE_TEST_POISON_BF16, "%s: out[%d][%d] not written", what, t, h);
      if (!any[t] && S == 0) {
        cr_assert_eq(g, 0, "%s: token %d has no local slot: out[%d][%d] = 0x%04x, want exact zero 0x0000", what, t, t,
                     h, g);
        continue;
      }
      if (g != want_fma[i] && g != want_mul[i]) {
        char slots[512] = "";
        for (int k = 0; k < K; k++) {
          const int r = slot_row[(size_t)t * K + k];
          size_t n = strlen(slots);
          if (r >= 0)
            snprintf(slots + n, sizeof slots - n, " %g*%g", (double)slot_w[(size_t)t * K + k],
                     (double)fp8moe_bf16_to_float(y[(size_t)r * H + h]));
          else
            snprintf(slots + n, sizeof slots - n, " -");
        }
        cr_assert_fail("%s: out[%d][%d] = 0x%04x (%g), want 0x%04x (fused) or 0x%04x (unfused) (%g); slots:%s", what,
                       t, h, g, (double)fp8moe_bf16_to_float(g), want_fma[i], want_mul[i],
                       (double)fp8moe_bf16_to_float(want_fma[i]), slots);
      }
    }
}

/* Tokens x locality x y kind x shared experts for one (K, H). */
template <int K, int H>
void combine_matrix(const char *name, const int *Ts, int nT, const int *Ss, int nS) {
  fp8moe_rng rng = {fp8moe_test_announce_seed(name)};
  static const float p_local[] = {0.0f, 0.3f, 1.0f};
  int cases = 0;
  for (int ti = 0; ti < nT; ti++)
    for (int si = 0; si < nS; si++)
      for (float p : p_local)
        for (int yk = Y_NORMAL; yk <= Y_WIDE; yk++) {
          combine_case c = {Ts[ti], Ss[si], p, (y_kind)yk};
          check_combine<K, H>(&rng, c);
          cases++;
        }
  fprintf(stderr, "[%s] %d cases passed\n", name, cases);
}

const int no_shared[] = {0};
const int some_shared[] = {0, 1, 2};

} // namespace

Test(gpu_combine, k1_h128) {
  static const int Ts[] = {1, 2, 7, 333};
  combine_matrix<1, 128>("K=1 H=128", Ts, 4, some_shared, 3);
}

Test(gpu_combine, k2_h256) {
  static const int Ts[] = {1, 9, 2048};
  combine_matrix<2, 256>("K=2 H=256", Ts, 3, some_shared, 3);
}

Test(gpu_combine, k6_h1152_partial_block) { /* 144 column vectors: a second, partial block of threads */
  static const int Ts[] = {1, 5, 100};
  combine_matrix<6, 1152>("K=6 H=1152", Ts, 3, no_shared, 1);
}

Test(gpu_combine, k8_h7168_deepseek) {
  static const int Ts[] = {1, 77, 513};
  combine_matrix<8, 7168>("K=8 H=7168", Ts, 3, some_shared, 3);
}

Test(gpu_combine, k16_h384) {
  static const int Ts[] = {1, 3, 257};
  combine_matrix<16, 384>("K=16 H=384", Ts, 3, no_shared, 1);
}

Test(gpu_combine, eight_shared_experts) {
  static const int Ts[] = {1, 31};
  static const int S8[] = {8};
  combine_matrix<8, 256>("K=8 H=256 S=8", Ts, 2, S8, 1);
}

/* T = 0: nothing is launched, nothing written. */
Test(gpu_combine, zero_tokens) {
  fp8moe_rng rng = {fp8moe_test_announce_seed("T=0")};
  combine_case c = {0, 0, 1.0f, Y_NORMAL};
  check_combine<8, 7168>(&rng, c);
  c.S = 2;
  check_combine<8, 7168>(&rng, c);
}

/* Order, exactly: slots y = +2^25, -2^25, 1 with weight 1 sum to 1 in slot
 * order, and to 0 in any order that adds the 1 to a 2^25 first (2^25 + 1
 * rounds back to 2^25), the reverse order included. With shared experts:
 * slots +2^25, -2^25, (not local), then a shared expert's y = 1: 1 only if
 * the shared row comes after the slots. */
Test(gpu_combine, slot_order) {
  const int K = 3, H = 128, T = 6;
  static const float big = 33554432.0f;
  for (int S = 0; S <= 1; S++) {
    const float vals[3] = {big, -big, 1.0f};
    std::vector<int> slot_row(T * K);
    std::vector<float> slot_w(T * K, 1.0f);
    const int row0 = T * K; /* the shared rows follow the slots' rows */
    std::vector<uint16_t> y((size_t)(row0 + S * T) * H);
    for (int t = 0; t < T; t++) {
      for (int k = 0; k < K; k++) {
        const int r = (t + 1) * K - 1 - k; /* rows in reverse, as an expert grouping may give */
        slot_row[t * K + k] = (S && k == 2) ? -1 : r;
        for (int h = 0; h < H; h++) y[(size_t)r * H + h] = fp8moe_bf16_from_float(vals[k]);
      }
      for (int h = 0; h < H && S; h++) y[(size_t)(row0 + t) * H + h] = fp8moe_bf16_from_float(1.0f);
    }
    int *d_row = dev_upload(slot_row.data(), slot_row.size());
    float *d_w = dev_upload(slot_w.data(), slot_w.size());
    uint16_t *d_y = dev_upload(y.data(), y.size());
    std::vector<uint16_t> out((size_t)T * H, (uint16_t)FP8MOE_TEST_POISON_BF16);
    uint16_t *d_out = dev_upload(out.data(), out.size());
    int *d_row0 = dev_upload(&row0, 1);
    combine_bufs b = {T, S, d_row, d_w, d_y, d_out, S ? d_row0 : NULL};
    run_combine<K, H>(b, "slot order");
    dev_download(out.data(), d_out, out.size());
    for (size_t i = 0; i < out.size(); i++)
      cr_assert_eq(out[i], 0x3F80, "S=%d: out[%zu][%zu] = 0x%04x (%g): 2^25 - 2^25 + 1 must be 1 in slot order", S,
                   i / H, i % H, out[i], (double)fp8moe_bf16_to_float(out[i]));
    for (void *p : {(void *)d_row, (void *)d_w, (void *)d_y, (void *)d_out, (void *)d_row0}) CUDA_OK(cudaFree(p));
  }
}
