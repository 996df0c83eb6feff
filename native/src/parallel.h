// The one way native kernels split a loop across OpenMP threads.
#pragma once
#include <omp.h>

#include <cstdint>

namespace sfn {

// Runs body(begin, end) on contiguous pieces of [0, n): one per OpenMP thread when `parallel`, else
// body(0, n) inline. Not an `omp parallel if (...)` clause: with a false condition libgomp still
// builds a one-thread team, about 2 µs per call — more than the whole loop for the small tensors
// of a training step.
template <typename F>
void forEachRange(int64_t n, bool parallel, const F& body) {
  if (!parallel || n < 2) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    // Each thread calls its own copy: GCC cannot tell the caller's closure apart from the output
    // the loop stores to, would reload its captures after every store, and stops vectorizing.
    const F local = body;
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    local(n * t / threads, n * (t + 1) / threads);
  }
}

// body(i) for every i in [0, n), split as forEachRange does.
template <typename F>
void forEachIndex(int64_t n, bool parallel, const F& body) {
  forEachRange(n, parallel, [&body](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

}  // namespace sfn
