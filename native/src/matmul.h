// Matrix products: one GEMM call (oneDNN or OpenBLAS sgemm), and batched / broadcast products on
// the oneDNN matmul primitive, cached by shape.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dnnl_util.h"

namespace sfn {

enum class GemmLibrary : int { Dnnl = 0, OpenBlas = 1 };

// Row-major C[M,N] = op(A)·op(B); op transposes when the flag is set. Pointers include offsets.
void sgemm(GemmLibrary lib, bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

// Batched product over broadcastable batch dims, dims per operand as tfjs gives them (the last two
// are the stored matrix, i.e. [K,M] when transA). Bias: nullptr or `n` values added per column.
struct MatmulShape {
  std::vector<int64_t> aDims, bDims;  // same rank, batch dims 1 where broadcast
  bool transA, transB;
  bool withBias;
  Activation activation;
  float alpha;
  // c = scale·op(a)·op(b) (+ bias), and with accumulate c += that instead (c's values read).
  float scale = 1.f;
  bool accumulate = false;
  std::string key() const;
};

// Logical [.., rows, cols] of op(X) over memory stored as `stored` (dense, row-major), so a
// transposed operand is read in place through strides.
dnnl_memory_desc_t logicalDesc(const std::vector<int64_t>& stored, bool transposed, dnnl_data_type_t type);

const std::string& runMatmul(const MatmulShape& s, const float* a, const float* b, const float* bias, float* c);

}  // namespace sfn
