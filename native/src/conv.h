// 2-D convolution forward / backward-data / backward-weights on oneDNN primitives, cached by shape.
#pragma once
#include <cstdint>
#include <string>

#include "dnnl_util.h"

namespace sfn {

enum class ConvKind : int { Forward = 0, BackwardData = 1, BackwardWeights = 2 };

// Shapes in tfjs terms; padding as the input rows/columns added before (top/left) and after.
struct ConvShape {
  int64_t n, c, h, w;       // input
  int64_t o, kh, kw;        // filter (stored HWIO by tfjs)
  int64_t oh, ow;           // output
  int64_t sh, sw;           // strides
  int64_t dh, dw;           // tfjs dilations (1 = none)
  int64_t pt, pl, pb, pr;   // padding
  bool channelsFirst;       // NCHW instead of NHWC
  bool withBias;            // forward only: a [O] bias
  Activation activation;    // forward only
  float alpha;              // leaky-relu slope
  std::string key(ConvKind kind) const;
};

// Runs one convolution pass. Forward: (x, w[, bias]) -> y. BackwardData: (dy, w) -> dx.
// BackwardWeights: (x, dy) -> dw. All buffers are caller-owned, dense, fp32.
// Returns the oneDNN implementation name; throws JsError when oneDNN cannot do this shape.
const std::string& runConv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out);

}  // namespace sfn
