/* tests/test_util.h - what the host (C) tests share: a seeded generator
 * (fresh data every run; FP8MOE_SEED=... reproduces one) and float bit
 * views. static inline, so a test that uses only some of it does not warn. */
#ifndef FP8MOE_TESTS_TEST_UTIL_H
#define FP8MOE_TESTS_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64 */
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rng_next(rng_t *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline float rng_uniform(rng_t *r) { return (float)((rng_next(r) >> 40) * (1.0 / 16777216.0)); }
static inline float rng_normal(rng_t *r) {
  float u1 = rng_uniform(r) + 1e-7f, u2 = rng_uniform(r);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* The seed of one test: FP8MOE_SEED if set, else the clock; printed. */
static inline uint64_t test_seed(const char *name) {
  const char *s = getenv("FP8MOE_SEED");
  uint64_t seed;
  struct timespec ts;
  if (s) {
    seed = strtoull(s, NULL, 0);
  } else {
    timespec_get(&ts, TIME_UTC);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
  }
  fprintf(stderr, "%s: FP8MOE_SEED=0x%llx\n", name, (unsigned long long)seed);
  return seed;
}

static inline uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

#endif
