#include "activation.h"

#include "fast_math.h"
#include "parallel.h"

namespace sfn {

namespace {

// Per element these cost a few ns with the vectorizable exp/tanh/erf of fast_math.h: a thread
// pays for itself well below the memory-bound threshold.
constexpr int64_t kParallelActivation = 1 << 13;
constexpr float kSqrt2OverPi = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluCubic = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;  // 1/√(2π)
constexpr float kQuickGelu = 1.702f;

template <SmoothActivation kKind, bool kGrad>
inline float apply(float v) {
  if constexpr (kKind == SmoothActivation::Silu) {
    const float s = sigmoidFast(v);
    return kGrad ? s * (1.f + v * (1.f - s)) : v * s;
  } else if constexpr (kKind == SmoothActivation::GeluTanh) {
    const float t = tanhFast(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
    return kGrad ? 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluCubic * v * v) : 0.5f * v * (1.f + t);
  } else if constexpr (kKind == SmoothActivation::GeluErf) {
    const float cdf = 0.5f * (1.f + erfFast(v * kInvSqrt2));
    return kGrad ? cdf + v * kInvSqrt2Pi * expFast(-0.5f * v * v) : v * cdf;
  } else {
    const float s = sigmoidFast(kQuickGelu * v);
    return kGrad ? s * (1.f + kQuickGelu * v * (1.f - s)) : v * s;
  }
}

// One range of the forward (dy null) or backward map, in each ISA clone (parallel.h).
template <SmoothActivation kKind>
inline __attribute__((always_inline)) void rangeOf(const float* __restrict dy, const float* __restrict x, float* __restrict out, int64_t n) {
  if (dy) {
    for (int64_t i = 0; i < n; ++i) out[i] = dy[i] * apply<kKind, true>(x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = apply<kKind, false>(x[i]);
  }
}

SFN_VECTOR_CLONES void activationRange(SmoothActivation kind, const float* dy, const float* x, float* out, int64_t n) {
  switch (kind) {
    case SmoothActivation::Silu: return rangeOf<SmoothActivation::Silu>(dy, x, out, n);
    case SmoothActivation::GeluTanh: return rangeOf<SmoothActivation::GeluTanh>(dy, x, out, n);
    case SmoothActivation::GeluErf: return rangeOf<SmoothActivation::GeluErf>(dy, x, out, n);
    case SmoothActivation::QuickGelu: return rangeOf<SmoothActivation::QuickGelu>(dy, x, out, n);
  }
}

void run(SmoothActivation kind, const float* dy, const float* x, float* out, int64_t n) {
  forEachRange(n, n >= kParallelActivation, [=](int64_t begin, int64_t end) { activationRange(kind, dy ? dy + begin : nullptr, x + begin, out + begin, end - begin); });
}

}  // namespace

void activationForward(SmoothActivation kind, const float* x, float* y, int64_t n) { run(kind, nullptr, x, y, n); }

void activationBackward(SmoothActivation kind, const float* dy, const float* x, float* dx, int64_t n) { run(kind, dy, x, dx, n); }

}  // namespace sfn
