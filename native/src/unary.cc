#include "unary.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fast_math.h"
#include "parallel.h"

namespace sfn {

namespace {

// Below these many elements a parallel region costs more than the loop: plain arithmetic is
// memory-bound (same threshold as elementwise.cc), the vectorized exp family costs ~1.5 ns an
// element and a libm call 2–30 ns.
constexpr int64_t kParallelCheap = 1 << 15;
constexpr int64_t kParallelFast = 1 << 13;
constexpr int64_t kParallelLibm = 1 << 11;

// The loop for one range, inlined into each ISA clone of unaryRange.
template <typename F>
inline __attribute__((always_inline)) void mapWith(F f, const float* __restrict x, float* __restrict y, int64_t n, int64_t) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

int64_t parallelThreshold(UnaryOp op) {
  switch (op) {
    case UnaryOp::Elu: case UnaryOp::Selu: case UnaryOp::Sigmoid: case UnaryOp::Tanh: case UnaryOp::Exp: case UnaryOp::Expm1:
    case UnaryOp::Erf:
      return kParallelFast;
    case UnaryOp::Log: case UnaryOp::Log1p: case UnaryOp::Softplus: case UnaryOp::Sin: case UnaryOp::Cos: return kParallelLibm;
    default: return kParallelCheap;
  }
}

// tfjs's SELU constants (backend_util.SELU_SCALE / SELU_SCALEALPHA, from the SELU paper).
constexpr float kSeluScale = 1.0507009873554804934193349852946f;
constexpr float kSeluScaleAlpha = 1.7580993408473768599402175208123f;
// tfjs Softplus switches to exp(x) below log(float epsilon) + 2 and to x above its negation.
const float kSoftplusThreshold = static_cast<float>(std::log(1.1920928955078125e-7) + 2.0);

}  // namespace

SFN_VECTOR_CLONES void unaryRange(UnaryOp op, const float* x, float* y, int64_t n, double p0, double p1) {
  const float alpha = static_cast<float>(p0), lo = static_cast<float>(p0), hi = static_cast<float>(p1);
  switch (op) {
    // `x <= 0 ? 0 : x` rather than max(0, x): NaN must pass through and -0 become +0, as Math.max does.
    case UnaryOp::Relu: return mapWith([](float v) { return v <= 0.f ? 0.f : v; }, x, y, n, kParallelCheap);
    case UnaryOp::Relu6: return mapWith([](float v) { return v <= 0.f ? 0.f : (v > 6.f ? 6.f : v); }, x, y, n, kParallelCheap);
    // alpha·x in double, as tfjs multiplies before rounding to float32.
    case UnaryOp::LeakyRelu:
      return mapWith(
          [p0](float v) {
            const auto neg = static_cast<float>(p0 * v);
            return v < 0.f ? neg : v;
          },
          x, y, n, kParallelCheap);
    // Both sides computed, then chosen: a branch around the exp would stop the loop vectorizing.
    case UnaryOp::Elu:
      return mapWith(
          [](float v) {
            const float neg = expm1Fast(std::min(v, 0.f));
            return v >= 0.f ? v : neg;
          },
          x, y, n, kParallelFast);
    case UnaryOp::Selu:
      return mapWith(
          [](float v) {
            const float neg = kSeluScaleAlpha * expm1Fast(std::min(v, 0.f));
            return v >= 0.f ? kSeluScale * v : neg;
          },
          x, y, n, kParallelFast);
    case UnaryOp::Sigmoid: return mapWith([](float v) { return sigmoidFast(v); }, x, y, n, kParallelFast);
    case UnaryOp::Tanh: return mapWith([](float v) { return tanhFast(v); }, x, y, n, kParallelFast);
    case UnaryOp::Exp: return mapWith([](float v) { return expFast(v); }, x, y, n, kParallelFast);
    case UnaryOp::Expm1: return mapWith([](float v) { return expm1Fast(v); }, x, y, n, kParallelFast);
    case UnaryOp::Log: return mapWith([](float v) { return std::log(v); }, x, y, n, kParallelLibm);
    case UnaryOp::Log1p: return mapWith([](float v) { return std::log1p(v); }, x, y, n, kParallelLibm);
    case UnaryOp::Sqrt: return mapWith([](float v) { return std::sqrt(v); }, x, y, n, kParallelCheap);
    // In double, rounded once, as tfjs's 1 / Math.sqrt(x) is.
    case UnaryOp::Rsqrt: return mapWith([](float v) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(v))); }, x, y, n, kParallelCheap);
    case UnaryOp::Square: return mapWith([](float v) { return v * v; }, x, y, n, kParallelCheap);
    case UnaryOp::Neg: return mapWith([](float v) { return -v; }, x, y, n, kParallelCheap);
    case UnaryOp::Abs: return mapWith([](float v) { return std::fabs(v); }, x, y, n, kParallelCheap);
    case UnaryOp::Step:
      return mapWith(
          [alpha](float v) {
            const float step = v > 0.f ? 1.f : alpha;
            return v != v ? v : step;  // NaN passes through
          },
          x, y, n, kParallelCheap);
    case UnaryOp::Softplus:
      return mapWith(
          [t = kSoftplusThreshold](float v) { return v < t ? std::exp(v) : (v > -t ? v : std::log1p(std::exp(v))); }, x, y, n,
          kParallelLibm);
    case UnaryOp::Sin: return mapWith([](float v) { return std::sin(v); }, x, y, n, kParallelLibm);
    case UnaryOp::Cos: return mapWith([](float v) { return std::cos(v); }, x, y, n, kParallelLibm);
    case UnaryOp::Erf: return mapWith([](float v) { return erfFast(v); }, x, y, n, kParallelFast);
    case UnaryOp::Reciprocal: return mapWith([](float v) { return 1.f / v; }, x, y, n, kParallelCheap);
    // NaN maps to 0, as tfjs's compare chain does.
    case UnaryOp::Sign: return mapWith([](float v) { return v < 0.f ? -1.f : (v > 0.f ? 1.f : 0.f); }, x, y, n, kParallelCheap);
    case UnaryOp::Floor: return mapWith([](float v) { return std::floor(v); }, x, y, n, kParallelCheap);
    case UnaryOp::Ceil: return mapWith([](float v) { return std::ceil(v); }, x, y, n, kParallelCheap);
    // Half-way cases to even, like tfjs Round (nearbyint, in the default rounding mode); tfjs
    // gives -0.5 → +0 where nearbyint keeps the sign.
    case UnaryOp::Round:
      return mapWith(
          [](float v) {
            const float r = std::nearbyint(v);
            return v == -0.5f ? 0.f : r;
          },
          x, y, n, kParallelCheap);
    case UnaryOp::ClipByValue:
      return mapWith([lo, hi](float v) { return v > hi ? hi : (v < lo ? lo : v); }, x, y, n, kParallelCheap);
  }
}

void unaryMap(UnaryOp op, const float* x, float* y, int64_t n, double p0, double p1) {
  forEachRange(n, n >= parallelThreshold(op), [=](int64_t begin, int64_t end) { unaryRange(op, x + begin, y + begin, end - begin, p0, p1); });
}

SFN_VECTOR_CLONES void leakyReluGradRange(const float* __restrict dy, const float* __restrict x, float alpha, float* __restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = dy[i], scaled = g * alpha;
    dx[i] = x[i] > 0.f ? g : scaled;
  }
}

void leakyReluGrad(const float* dy, const float* x, float alpha, float* dx, int64_t n) {
  forEachRange(n, n >= kParallelCheap, [=](int64_t begin, int64_t end) { leakyReluGradRange(dy + begin, x + begin, alpha, dx + begin, end - begin); });
}

void selectRows(const uint8_t* cond, int64_t inner, const float* t, const float* e, float* out, int64_t n) {
  if (inner == 1) {
    forEachRange(n, n >= kParallelCheap, [cond, t, e, out](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // Both loaded, then chosen: a load under the condition is a branch per element.
        const float tv = t[i], ev = e[i];
        out[i] = cond[i] ? tv : ev;
      }
    });
    return;
  }
  forEachIndex(n / inner, n >= kParallelCheap, [&](int64_t r) {
    const float* src = cond[r] ? t : e;
    std::copy(src + r * inner, src + (r + 1) * inner, out + r * inner);
  });
}

}  // namespace sfn
