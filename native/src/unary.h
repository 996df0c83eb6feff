// Elementwise float32 maps (activations, their gradients' building blocks, rounding, roots) and the
// bool-conditioned Select, as plain loops: the tfjs cpu backend runs each as a JS loop with a
// closure call per element.
#pragma once
#include <cstdint>

namespace sfn {

// One code per tfjs kernel; each follows that kernel's cpu semantics for NaN, ±0 and ±Inf.
enum class UnaryOp : int {
  Relu = 0,
  Relu6 = 1,
  LeakyRelu = 2,  // p0 = alpha
  Elu = 3,
  Selu = 4,
  Sigmoid = 5,
  Tanh = 6,
  Exp = 7,
  Expm1 = 8,
  Log = 9,
  Log1p = 10,
  Sqrt = 11,
  Rsqrt = 12,
  Square = 13,
  Neg = 14,
  Abs = 15,
  Step = 16,  // p0 = alpha
  Softplus = 17,
  Sin = 18,
  Cos = 19,
  Erf = 20,
  Reciprocal = 21,
  Sign = 22,
  Floor = 23,
  Ceil = 24,
  Round = 25,
  ClipByValue = 26,  // p0 = min, p1 = max
};
constexpr int kUnaryOpCount = 27;

// y[i] = op(x[i]) for i < n; p0/p1 are the op's scalar attributes (unused by most), kept in double
// because tfjs multiplies by alpha in double before rounding to float32.
void unaryMap(UnaryOp op, const float* x, float* y, int64_t n, double p0, double p1);

// dx = x > 0 ? dy : dy·alpha (alpha in float32), the gradient tfjs composes as where(x > 0, dy, dy·alpha).
void leakyReluGrad(const float* dy, const float* x, float alpha, float* dx, int64_t n);

// out[i] = cond[i / inner] ? t[i] : e[i]: `inner` = 1 for a condition shaped like t, or the row
// size when the condition is rank 1 over t's first axis.
void selectRows(const uint8_t* cond, int64_t inner, const float* t, const float* e, float* out, int64_t n);

}  // namespace sfn
