// Keeps asynchronous signals off the threads that run native kernels.
//
// oneDNN 2.x's JIT sgemm kernels (jit_avx512_common_gemm_f32 and its AVX2 sibling, used by
// dnnl_sgemm, the attention kernel and gemm-based matmul/convolution) point rsp into a heap
// workspace while they run (fixed upstream in oneDNN PR #4855, 2026; Debian ships 2.6.3). A
// signal delivered to such a thread with a handler installed makes the kernel push the signal
// frame (about 3 KB with AVX-512 state) onto that "stack", i.e. over malloc'd memory: glibc later
// aborts with "corrupted size vs. prev_size". Node always handles SIGCHLD, so killing a child
// process during a training step was enough (bench/threads.ts kills its busy-loop competitors).
//
// While a SignalShield lives, the calling thread blocks every signal a handler could catch
// asynchronously; the kernel does not see a pending signal until the shield ends, and a
// process-directed one goes to another Node thread meanwhile. OpenMP worker threads are started
// from inside a native call, so they inherit the blocked mask and keep it for their lifetime.
// Synchronous fault signals stay deliverable so crashes are still reported where they happen.
#pragma once
#include <signal.h>

namespace sfn {

class SignalShield {
 public:
  SignalShield();
  ~SignalShield();
  SignalShield(const SignalShield&) = delete;
  SignalShield& operator=(const SignalShield&) = delete;

 private:
  sigset_t previous_;
  bool active_ = false;
};

// Whether signal `sig` is blocked on the calling thread and on every thread of an OpenMP team of
// the current size (for tests: the worker threads must never take a signal inside oneDNN).
bool signalBlockedOnAllOmpThreads(int sig);

}  // namespace sfn
