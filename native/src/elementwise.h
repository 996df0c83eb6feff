// Memory-bound kernels the tfjs cpu backend runs slowly in JS: broadcasting binary arithmetic,
// softmax over the last axis, and strided slices. Plain loops, OpenMP-parallel over outer rows.
#pragma once
#include <cstdint>
#include <vector>

namespace sfn {

enum class BinaryOp : int { Add = 0, Sub = 1, Mul = 2, Div = 3 };

// out[outShape] = a ∘ b with numpy broadcasting; aShape/bShape are already padded to out's rank.
void broadcastBinary(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                     float* out, const std::vector<int64_t>& outShape);

// Numerically stable softmax of each length-`cols` row.
void softmaxRows(const float* x, float* y, int64_t rows, int64_t cols);

// out = x[begin : begin + size] for a dense row-major x of shape `shape`.
void sliceCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& size,
               float* out);

}  // namespace sfn
