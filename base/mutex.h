// base/mutex.h: the mutex and condition variable every folder uses: std::mutex and
// std::condition_variable_any under Abseil's thread-safety annotations.
//
// Why not absl::Mutex: Debian's Abseil is a prebuilt library without ThreadSanitizer
// annotations, so TSan cannot see its lock/unlock and reports every access it guards as a race.
// The standard library's mutex is intercepted by every sanitizer, and the annotations
// (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED) still let Clang's -Wthread-safety check the
// locking. Not copyable or movable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace cachesvc {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // BasicLockable, for CondVar.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Tells the lock analysis that the caller holds this mutex, where the analysis cannot follow
  // (a callback that a library invokes under the caller's lock). Checks nothing at run time:
  // std::mutex cannot say who owns it.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Waits until `done()` holds; `mu` is held on entry and on return.
  template <typename Pred>
  void Wait(Mutex* mu, Pred done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    cv_.wait(*mu, done);
  }
  // As Wait, for at most `timeout`; returns whether `done()` holds.
  template <typename Pred, typename Rep, typename Period>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout, Pred done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return cv_.wait_for(*mu, timeout, done);
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

}  // namespace cachesvc
