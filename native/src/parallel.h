// The ways native kernels split a loop across OpenMP threads.
#pragma once
#include <omp.h>

#include <cstdint>

// Elementwise loops compiled three times, for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the
// baseline, picked once at load by the CPU's features (GCC's ifunc dispatch): the binary still runs
// on CPUs without AVX-512, and the exp-family maps vectorize 16 wide where they can. Put it on a
// plain (non-template) function that holds the loops; the inline helpers it calls are compiled
// into each clone. -ffp-contract=off keeps the three bit-identical (no FMA contraction).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SFN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SFN_VECTOR_CLONES
#endif

namespace sfn {

// Below this much work (in floats touched) a parallel region costs more than the loop.
constexpr int64_t kParallelWork = 1 << 15;

// Runs body(begin, end) on contiguous pieces of [0, n): one per OpenMP thread when `parallel`, else
// body(0, n) inline. Not an `omp parallel if (...)` clause: with a false condition libgomp still
// builds a one-thread team, about 2 µs per call — more than the whole loop for the small tensors
// of a training step.
template <typename F>
void forEachRange(int64_t n, bool parallel, const F& body) {
  if (!parallel || n < 2 || omp_get_max_threads() == 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    // Each thread calls its own copy: GCC cannot tell the caller's closure apart from the output
    // the loop stores to, would reload its captures after every store, and stops vectorizing.
    const F local = body;
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
    if (begin < end) local(begin, end);
  }
}

// body(i) for every i in [0, n), split as forEachRange does.
template <typename F>
void forEachIndex(int64_t n, bool parallel, const F& body) {
  forEachRange(n, parallel, [&body](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// forEachRange over n items of `workPerItem` floats each, parallel when the total is large enough.
// Contiguous ranges let kernels walk their index odometers incrementally instead of decoding every item.
template <typename F>
void forRanges(int64_t n, int64_t workPerItem, F f) {
  if (n <= 0) return;
  forEachRange(n, n * workPerItem >= kParallelWork, f);
}

}  // namespace sfn
