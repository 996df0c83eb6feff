// Normalisation + FiLM modulation + activation in one pass each way: y = act(x̂·(1 + scale) + shift)
// with x̂ the group- or layer-normalised input and (scale, shift) per sample and channel, read from
// the modulation projection's output [n, width] at column offsets (so FiLM's split is not a kernel).
#pragma once
#include <node_api.h>

namespace sfn {

// normModulate(x, dims Int32Array[n, t, p, c, g, width, scaleOff, shiftOff, act], eps, mod, y, mean, rstd):
// x [n, t, p, c]: statistics per (sample, tile t, group) over p positions and c/g channels —
// GroupNorm is t = 1, LayerNorm is p = 1. mean and rstd are [n, t, g]. act: 0 none, 1 SiLU.
napi_value normModulateBinding(napi_env env, napi_callback_info cb);

// normModulateGrad(dy, x, dims, mod, mean, rstd, dx, dmod): dmod [n, width] gets the scale and
// shift gradients at their offsets and zeros elsewhere.
napi_value normModulateGradBinding(napi_env env, napi_callback_info cb);

// gatedResidual(x, branch, mod, dims Int32Array[n, s, c, width, offset], out): out = x + branch·gate,
// gate = mod[b, offset : offset + c] per sample b, broadcast over its s positions (DiT's adaLN-Zero gate).
napi_value gatedResidualBinding(napi_env env, napi_callback_info cb);

// gatedResidualGrad(dy, branch, mod, dims, dbranch, dmod): dbranch = dy·gate, dmod's gate columns
// Σ over positions of dy·branch, zeros elsewhere (dx is dy itself).
napi_value gatedResidualGradBinding(napi_env env, napi_callback_info cb);

}  // namespace sfn
