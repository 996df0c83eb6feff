// Reductions over any set of axes (Sum, Mean, Max, Min, Prod) without the transpose the tfjs cpu
// backend makes first: one pass over the input in memory order, accumulating in double.
#pragma once
#include <cstdint>
#include <vector>

namespace sfn {

enum class ReduceOp : int { Sum = 0, Mean = 1, Max = 2, Min = 3, Prod = 4 };

// out[kept dims, in order] = op over the dims flagged in `reduced` (same length as shape).
void reduce(ReduceOp op, const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduced, float* out);

}  // namespace sfn
