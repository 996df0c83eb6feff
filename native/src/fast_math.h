// Vectorizable float32 exp, expm1, sigmoid, tanh and erf for the activation kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace sfn {

// exp for the activations, in a form GCC vectorizes (glibc's expf/expm1f/tanhf are scalar calls,
// 4–35 ns each): x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2 so n·ln2hi is exact),
// e^r by its Taylor series to r⁷ (truncation < 6e-9), 2^n built in the exponent bits in two halves
// so that results down in the subnormal range come out right. Every multiply-add is an explicit
// fused one: the build keeps -ffp-contract=off so that the ISA clones (parallel.h) give the same
// bits, and explicit fmaf gives the same bits everywhere while the AVX2/AVX-512 clones run it as one
// instruction (1.3× the speed of the unfused form; the baseline clone, for pre-2013 CPUs without
// FMA, calls libm's fmaf). Measured against double exp over all of [-87, 88]: ≤ 0.94 ulp; expm1
// ≤ 3.2 ulp (worst just past |x| = ln2/2), tanh ≤ 3.0, sigmoid ≤ 2.5.
struct ExpSplit {
  float n;   // round(x / ln2)
  float rq;  // e^r − 1
  float er;  // e^r, rounded once (not 1 + rq, rounded twice)
  float scaleLo, scaleHi;  // 2^n as a product of two powers of two
};

inline float fromBits(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline ExpSplit expSplit(float x) {
  // Beyond [-104, 89] exp is 0 or Inf in float32 anyway; a NaN becomes -104 here (so the int
  // conversion below stays defined) and is restored by the callers.
  const float xc = std::max(-104.f, std::min(x, 89.f));
  constexpr float kRoundShift = 12582912.f;  // 1.5·2^23: adding and subtracting it rounds to an integer
  const float n = __builtin_fmaf(xc, 1.44269504088896341f, kRoundShift) - kRoundShift;
  const float r = __builtin_fmaf(n, 2.12194440e-4f, __builtin_fmaf(n, -0.693359375f, xc));
  const float q = __builtin_fmaf(r, __builtin_fmaf(r, __builtin_fmaf(r, __builtin_fmaf(r, __builtin_fmaf(r, __builtin_fmaf(r, 1.f / 5040, 1.f / 720), 1.f / 120), 1.f / 24), 1.f / 6), 0.5f), 1.f);
  const auto ni = static_cast<int32_t>(n);
  const int32_t half = ni >> 1;
  return {n, r * q, __builtin_fmaf(r, q, 1.f), fromBits((half + 127) << 23), fromBits((ni - half + 127) << 23)};
}

inline float expFast(float x) {
  const ExpSplit e = expSplit(x);
  const float y = e.er * e.scaleLo * e.scaleHi;
  return x != x ? x : y;
}

// With n = 0 the series gives e^x − 1 directly, without the cancellation of exp(x) − 1 near 0.
inline float expm1Fast(float x) {
  const ExpSplit e = expSplit(x);
  const float y = e.n == 0.f ? e.rq : e.er * e.scaleLo * e.scaleHi - 1.f;
  return x != x ? x : y;
}

inline float sigmoidFast(float x) { return 1.f / (1.f + expFast(-x)); }

// Softmax of one row (out may be in): max shift, exp, sum in double in column order, 1/sum. Call
// it from an ISA-cloned function (parallel.h) so the exp vectorizes; glibc's expf is a scalar call
// of ~5 ns, which made short rows (cross-attention to 16 text tokens) cost ~2.5 ms per NSP call.
inline __attribute__((always_inline)) void softmaxRow(const float* in, float* out, int64_t cols) {
  float m = in[0];
  for (int64_t c = 1; c < cols; ++c) m = std::max(m, in[c]);
  for (int64_t c = 0; c < cols; ++c) out[c] = expFast(in[c] - m);
  double sum = 0;
  for (int64_t c = 0; c < cols; ++c) sum += out[c];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t c = 0; c < cols; ++c) out[c] *= inv;
}

// From s = e^(−2|x|) ∈ (0, 1], so nothing overflows: tanh|x| = 1 − 2s/(1 + s), which keeps the
// last bits right towards ±1 (where a gradient's 1 − y² magnifies them), and −m/(m + 2) with
// m = s − 1 = expm1(−2|x|) below 0.55, free of the cancellation of 1 − … near 0.
inline float tanhFast(float x) {
  const float a = std::fabs(x);
  const ExpSplit e = expSplit(-2.f * a);
  const float s = e.er * e.scaleLo * e.scaleHi;
  const float m = e.n == 0.f ? e.rq : s - 1.f;
  const float nearZero = -m / (m + 2.f), towardsOne = 1.f - 2.f * s / (1.f + s);
  const float y = std::copysign(a < 0.55f ? nearZero : towardsOne, x);
  return x != x ? x : y;
}

// The same Abramowitz–Stegun 7.1.26 approximation as tfjs's Erf (|error| < 1.5e-7), vectorizable.
// The polynomial and 1 − p·e^(−x²) in double, as tfjs does: near 0 that difference of two numbers
// close to 1 would lose a few bits in float.
inline float erfFast(float x) {
  const double a = std::fabs(x);
  const double t = 1.0 / (1.0 + 0.3275911 * a);
  const double poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const float sign = x > 0.f ? 1.f : (x < 0.f ? -1.f : x);  // ±0 and NaN pass through, as Math.sign does
  return sign * static_cast<float>(1.0 - poly * expFast(static_cast<float>(-a * a)));
}

}  // namespace sfn
