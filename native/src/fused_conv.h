// Convolution over a list of NHWC inputs read as their channel concatenation, with the weight in
// PyTorch's [out, in, kh, kw] layout, bias and a ReLU-family activation in one pass each way: what
// a residual dense block's conv (concat → transpose weight → conv → bias → leaky ReLU) costs as
// one kernel instead of five, plus their gradients.
#pragma once
#include <node_api.h>

namespace sfn {

// convList(geom Int32Array[14], channels Int32Array, inputs Float32Array[], weight, bias|null, activation, alpha, y) -> implementation
napi_value convListForwardBinding(napi_env env, napi_callback_info cb);

// convListGrad(geom, channels, inputs[], weight, y|null, dy, activation, alpha, dxs (Float32Array|null)[], dw|null, db|null)
napi_value convListBackwardBinding(napi_env env, napi_callback_info cb);

}  // namespace sfn
