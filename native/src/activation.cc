#include "activation.h"
#include "parallel.h"

#include <omp.h>

#include <cmath>

namespace sfn {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;  // √(2/π)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1/√(2π)
constexpr double kQuickGelu = 1.702;

inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Value and derivative in double: the composites round after each of their ops, so this is at
// least as close to the exact function as they are.
template <bool kGrad>
inline double apply(SmoothActivation kind, double v) {
  switch (kind) {
    case SmoothActivation::Silu: {
      const double s = sigmoid(v);
      return kGrad ? s * (1 + v * (1 - s)) : v * s;
    }
    case SmoothActivation::GeluTanh: {
      const double t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
      return kGrad ? 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * kSqrt2OverPi * (1 + 3 * kGeluCubic * v * v) : 0.5 * v * (1 + t);
    }
    case SmoothActivation::GeluErf: {
      const double cdf = 0.5 * (1 + std::erf(v * kInvSqrt2));
      return kGrad ? cdf + v * kInvSqrt2Pi * std::exp(-0.5 * v * v) : v * cdf;
    }
    case SmoothActivation::QuickGelu: {
      const double s = sigmoid(kQuickGelu * v);
      return kGrad ? s * (1 + kQuickGelu * v * (1 - s)) : v * s;
    }
  }
  return 0;
}

}  // namespace

void activationForward(SmoothActivation kind, const float* x, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(apply<false>(kind, x[i]));
}

void activationBackward(SmoothActivation kind, const float* dy, const float* x, float* dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<float>(dy[i] * apply<true>(kind, x[i]));
}

}  // namespace sfn
