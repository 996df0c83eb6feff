// bf16 mixed-precision products, as torch.autocast('cpu', dtype=torch.bfloat16) runs them: the
// operands of matmul and convolution (forward, backward data, backward weights) are converted to
// bfloat16 inside the kernel, oneDNN multiplies them with fp32 accumulation, and the result is
// written as fp32. Callers keep fp32 tensors throughout; nothing outside these kernels sees bf16.
#pragma once
#include <cstdint>
#include <string>

#include "conv.h"
#include "matmul.h"

namespace sfn {

// Whether matmul() and conv() take the bf16 path (set from JS for the span of a bf16 training run).
void setBf16Compute(bool on);
bool bf16Compute();

// dst[i] = src[i] rounded to bf16 (to nearest, ties to even; NaN stays NaN). With AVX-512-BF16
// this is VCVTNEPS2BF16, which, like oneDNN's bf16 kernels, flushes subnormal inputs to zero.
void convertToBf16(const float* src, uint16_t* dst, int64_t n);

// The bf16 counterparts of runMatmul and runConv: same shapes, same fp32 buffers, same results up
// to the rounding of the operands to bf16. Return the oneDNN implementation name.
// aBf16/bBf16, when given, are that operand already converted (convertToBf16 of a/b, which may then be null).
const std::string& runBf16Matmul(const MatmulShape& s, const float* a, const float* b, const float* bias, float* c, const uint16_t* aBf16 = nullptr,
                                 const uint16_t* bBf16 = nullptr);
const std::string& runBf16Conv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out);

// oneDNN 2.6 treats Intel AMX as "initial support": its default dispatch (dnnl_cpu_isa_all)
// leaves AMX out, and it is enabled only by DNNL_MAX_CPU_ISA=AVX512_CORE_AMX or
// dnnl_set_max_cpu_isa before the first primitive. On a CPU with AMX this asks Linux for the tile
// state (arch_prctl ARCH_REQ_XCOMP_PERM, needed since kernel 5.16) and raises oneDNN's ceiling,
// unless the user set DNNL_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA. Must run before any other oneDNN
// call; returns what it did, for `scaleforge env`.
const std::string& enableAmxWhenPresent();

}  // namespace sfn
