#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "fast_math.h"
#include "parallel.h"

namespace sfn {

namespace {

// Below this many elements a parallel region costs more than the loop.
constexpr int64_t kParallelElements = 1 << 15;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

template <typename F, typename T>
void binaryRow(F f, const float* a, int64_t sa, const float* b, int64_t sb, T* out, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (sa == 1) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (sb == 1) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    const T v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

template <typename F, typename T>
void broadcastWith(F f, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape, T* out,
                   const std::vector<int64_t>& outShape) {
  // Merge adjacent dims that broadcast the same way, so the inner loop is as long as possible.
  std::vector<int64_t> dims, aDims, bDims;
  for (size_t i = 0; i < outShape.size(); ++i) {
    if (outShape[i] == 1) continue;
    const bool aB = aShape[i] == 1, bB = bShape[i] == 1;
    if (!dims.empty() && (aDims.back() == 1) == aB && (bDims.back() == 1) == bB) {
      dims.back() *= outShape[i], aDims.back() *= aShape[i], bDims.back() *= bShape[i];
    } else {
      dims.push_back(outShape[i]), aDims.push_back(aShape[i]), bDims.push_back(bShape[i]);
    }
  }
  if (dims.empty()) dims = aDims = bDims = {1};
  const int r = static_cast<int>(dims.size());
  std::vector<int64_t> aStride(r), bStride(r);
  int64_t as = 1, bs = 1;
  for (int i = r - 1; i >= 0; --i) {
    aStride[i] = aDims[i] == 1 ? 0 : as, bStride[i] = bDims[i] == 1 ? 0 : bs;
    as *= aDims[i], bs *= bDims[i];
  }
  const int64_t inner = dims[r - 1];
  int64_t outer = 1;
  for (int i = 0; i < r - 1; ++i) outer *= dims[i];
  const int64_t saInner = aStride[r - 1], sbInner = bStride[r - 1];
  forEachIndex(outer, outer * inner >= kParallelElements, [&](int64_t o) {
    int64_t aOff = 0, bOff = 0, rest = o;
    for (int i = r - 2; i >= 0; --i) {
      const int64_t idx = rest % dims[i];
      rest /= dims[i];
      aOff += idx * aStride[i], bOff += idx * bStride[i];
    }
    binaryRow(f, a + aOff, saInner, b + bOff, sbInner, out + o * inner, inner);
  });
}

}  // namespace

void broadcastBinary(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                     float* out, const std::vector<int64_t>& outShape) {
  switch (op) {
    case BinaryOp::Add: return broadcastWith([](float x, float y) { return x + y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Sub: return broadcastWith([](float x, float y) { return x - y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Mul: return broadcastWith([](float x, float y) { return x * y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Div: return broadcastWith([](float x, float y) { return x / y; }, a, aShape, b, bShape, out, outShape);
    // Math.max/Math.min semantics: NaN if either is NaN, and +0 ranks above -0.
    case BinaryOp::Maximum:
      return broadcastWith([](float x, float y) { return x > y ? x : (x < y ? y : (x == y ? (std::signbit(x) ? y : x) : kNaN)); }, a,
                           aShape, b, bShape, out, outShape);
    case BinaryOp::Minimum:
      return broadcastWith([](float x, float y) { return x < y ? x : (x > y ? y : (x == y ? (std::signbit(x) ? x : y) : kNaN)); }, a,
                           aShape, b, bShape, out, outShape);
    // In double, as tfjs computes (a - b)² before rounding once to float32.
    case BinaryOp::SquaredDifference:
      return broadcastWith(
          [](float x, float y) {
            const double d = static_cast<double>(x) - y;
            return static_cast<float>(d * d);
          },
          a, aShape, b, bShape, out, outShape);
    // Math.pow, not C pow: a NaN exponent gives NaN even for base 1, and (±1)^±Inf is NaN.
    case BinaryOp::Pow:
      if (std::all_of(bShape.begin(), bShape.end(), [](int64_t d) { return d == 1; }) && (b[0] == 2.f || b[0] == 3.f)) {
        // Squares and cubes (GELU's x³) as products, which vectorize: in double, x² is exact and
        // x²·x rounds once, so both are the correctly rounded powers that pow returns.
        if (b[0] == 2.f) {
          return broadcastWith([](float x, float) { return static_cast<float>(static_cast<double>(x) * x); }, a, aShape, b, bShape, out,
                               outShape);
        }
        return broadcastWith(
            [](float x, float) {
              const double d = x;
              return static_cast<float>(d * d * d);
            },
            a, aShape, b, bShape, out, outShape);
      }
      return broadcastWith(
          [](float x, float y) {
            if (y != y || (std::isinf(y) && std::fabs(x) == 1.f)) return kNaN;
            return static_cast<float>(std::pow(static_cast<double>(x), static_cast<double>(y)));
          },
          a, aShape, b, bShape, out, outShape);
    default: throw std::invalid_argument("broadcastBinary: not an arithmetic op");
  }
}

void broadcastCompare(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                      uint8_t* out, const std::vector<int64_t>& outShape) {
  using u8 = uint8_t;
  switch (op) {
    case BinaryOp::Greater: return broadcastWith([](float x, float y) { return u8(x > y); }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::GreaterEqual: return broadcastWith([](float x, float y) { return u8(x >= y); }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Less: return broadcastWith([](float x, float y) { return u8(x < y); }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::LessEqual: return broadcastWith([](float x, float y) { return u8(x <= y); }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Equal: return broadcastWith([](float x, float y) { return u8(x == y); }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::NotEqual: return broadcastWith([](float x, float y) { return u8(x != y); }, a, aShape, b, bShape, out, outShape);
    default: throw std::invalid_argument("broadcastCompare: not a comparison op");
  }
}

namespace {

SFN_VECTOR_CLONES void softmaxRange(const float* x, float* y, int64_t begin, int64_t end, int64_t cols) {
  for (int64_t r = begin; r < end; ++r) softmaxRow(x + r * cols, y + r * cols, cols);
}

}  // namespace

void softmaxRows(const float* x, float* y, int64_t rows, int64_t cols) {
  forEachRange(rows, rows * cols >= kParallelElements, [&](int64_t begin, int64_t end) { softmaxRange(x, y, begin, end, cols); });
}

void sliceCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& size,
               float* out) {
  const int r = static_cast<int>(shape.size());
  std::vector<int64_t> stride(r);
  int64_t s = 1;
  for (int i = r - 1; i >= 0; --i) stride[i] = s, s *= shape[i];
  const int64_t inner = size[r - 1];
  int64_t outer = 1;
  for (int i = 0; i < r - 1; ++i) outer *= size[i];
  forEachIndex(outer, outer * inner >= kParallelElements, [&](int64_t o) {
    int64_t off = begin[r - 1], rest = o;
    for (int i = r - 2; i >= 0; --i) {
      off += (begin[i] + rest % size[i]) * stride[i];
      rest /= size[i];
    }
    std::copy(x + off, x + off + inner, out + o * inner);
  });
}

}  // namespace sfn
