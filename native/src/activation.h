// Smooth activations that tfjs can only compose from 4–8 elementwise kernels (SiLU, GELU in its
// tanh and erf forms, QuickGELU): value and derivative in one pass each.
#pragma once
#include <cstdint>

namespace sfn {

enum class SmoothActivation : int { Silu = 0, GeluTanh = 1, GeluErf = 2, QuickGelu = 3 };

void activationForward(SmoothActivation kind, const float* x, float* y, int64_t n);

// dx = dy · f'(x)
void activationBackward(SmoothActivation kind, const float* dy, const float* x, float* dx, int64_t n);

}  // namespace sfn
