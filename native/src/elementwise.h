// Memory-bound kernels the tfjs cpu backend runs slowly in JS: broadcasting binary arithmetic,
// softmax over the last axis, and strided slices. Plain loops, OpenMP-parallel over outer rows.
#pragma once
#include <cstdint>
#include <vector>

namespace sfn {

// Ops from Greater on compare and write a bool (0/1 byte), like tfjs's bool tensors.
enum class BinaryOp : int {
  Add = 0,
  Sub = 1,
  Mul = 2,
  Div = 3,
  Maximum = 4,
  Minimum = 5,
  SquaredDifference = 6,
  Pow = 7,
  Greater = 8,
  GreaterEqual = 9,
  Less = 10,
  LessEqual = 11,
  Equal = 12,
  NotEqual = 13,
};
constexpr int kBinaryOpCount = 14;
constexpr bool isComparison(BinaryOp op) { return op >= BinaryOp::Greater; }

// out[outShape] = a ∘ b with numpy broadcasting; aShape/bShape are already padded to out's rank.
void broadcastBinary(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                     float* out, const std::vector<int64_t>& outShape);

// The same for a comparison op, writing 0/1 bytes.
void broadcastCompare(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                      uint8_t* out, const std::vector<int64_t>& outShape);

// Numerically stable softmax of each length-`cols` row.
void softmaxRows(const float* x, float* y, int64_t rows, int64_t cols);

// out = x[begin : begin + size] for a dense row-major x of shape `shape`.
void sliceCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& size,
               float* out);

}  // namespace sfn
