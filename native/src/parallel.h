// How the memory-bound kernels split work across OpenMP threads.
#pragma once
#include <omp.h>

#include <cstdint>

namespace sfn {

// Below this much work (in floats touched) a parallel region costs more than the loop
// (the same threshold elementwise.cc uses).
constexpr int64_t kParallelWork = 1 << 15;

// Calls f(begin, end) on contiguous, balanced ranges of [0, n): one range per thread when the
// total work is large enough, otherwise the whole range on the calling thread. Contiguous ranges
// let kernels walk their index odometers incrementally instead of decoding every item.
template <typename F>
void forRanges(int64_t n, int64_t workPerItem, F f) {
  if (n <= 0) return;
  if (n == 1 || n * workPerItem < kParallelWork || omp_get_max_threads() == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) f(begin, end);
  }
}

}  // namespace sfn
