// NHWC average pooling and image resizing with exactly tfjs's index conventions (its cpu
// kernels' window clipping, alignCorners / halfPixelCenters source coordinates and clamping),
// plus their gradients as the true adjoints of those forward passes. Plain loops: the windows
// here are small and oneDNN's layouts would cost a reorder each way.
#pragma once
#include <cstdint>

namespace sfn {

// Windows start at out·stride − pad and are clipped to the input; an average divides by the
// number of input pixels the clipped window holds (padding is not counted), as tfjs does.
struct PoolShape {
  int64_t batch, inH, inW, channels, outH, outW, filterH, filterW, strideH, strideW, padTop, padLeft;
};

void avgPoolForward(const PoolShape& s, const float* x, float* y);
// dx of avgPoolForward: each output's gradient spread evenly over the pixels its average read.
void avgPoolBackward(const PoolShape& s, const float* dy, float* dx);

struct ResizeShape {
  int64_t batch, inH, inW, channels, outH, outW;
  bool alignCorners, halfPixelCenters;
};

void resizeBilinearForward(const ResizeShape& s, const float* x, float* y);
void resizeBilinearBackward(const ResizeShape& s, const float* dy, float* dx);
void resizeNearestForward(const ResizeShape& s, const float* x, float* y);
void resizeNearestBackward(const ResizeShape& s, const float* dy, float* dx);

}  // namespace sfn
