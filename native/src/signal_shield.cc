#include "signal_shield.h"

#include <omp.h>
#include <pthread.h>

#include <initializer_list>

namespace sfn {

namespace {

sigset_t asyncSignals() {
  sigset_t set;
  sigfillset(&set);
  // Raised by the faulting instruction itself: blocking them would turn a crash into a hang or
  // hide it from V8's wasm trap handler.
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&set, sig);
  return set;
}

}  // namespace

SignalShield::SignalShield() {
  static const sigset_t blocked = asyncSignals();
  active_ = pthread_sigmask(SIG_BLOCK, &blocked, &previous_) == 0;
}

SignalShield::~SignalShield() {
  if (active_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

bool signalBlockedOnAllOmpThreads(int sig) {
  int unblocked = 0;
#pragma omp parallel reduction(+ : unblocked)
  {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    if (sigismember(&mask, sig) != 1) unblocked += 1;
  }
  return unblocked == 0;
}

}  // namespace sfn
