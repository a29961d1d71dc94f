// tests/support/subprocess.h: runs a program of the project as a child process for integration
// tests: its stdout and stderr are captured, lines can be awaited with a deadline, signals sent,
// and the exit awaited with a deadline. The child is killed when the object is destroyed, so a
// failing test never leaves a daemon behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cachesvc::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) in folder `cwd` (empty: the parent's) with the parent's environment
  // plus `env` (which overrides). Aborts the test binary if fork itself fails; a program that
  // cannot be executed exits 127.
  explicit Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env = {},
                      const std::string& cwd = "");
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  // Waits until the combined output holds a line containing `needle`; returns that line, or
  // nullopt when the deadline passes or the child closes its output first.
  std::optional<std::string> WaitForLine(const std::string& needle,
                                         std::chrono::milliseconds timeout);

  void Signal(int signal_number);
  // Signal() returns before the child acts on it. Waits until the child is stopped (SIGSTOP:
  // state T) or gone (SIGKILL: zombie or reaped), as /proc says; false at the deadline.
  bool WaitUntilStopped(std::chrono::milliseconds timeout);
  bool WaitUntilDead(std::chrono::milliseconds timeout);

  // The exit code (or 128 + signal when killed by one), or nullopt at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

  // Everything printed so far (stdout and stderr interleaved).
  const std::string& output() const { return output_; }
  // Reads whatever the child has printed and not been read yet, without waiting.
  void ReadAvailable() {
    while (Pump(std::chrono::milliseconds(0)) > 0) {
    }
  }

 private:
  // Reads what is available, waiting at most `timeout`; returns the bytes read (0 at end of
  // output, which also closes out_fd_).
  std::size_t Pump(std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string output_;
  std::size_t scanned_ = 0;
  std::optional<int> exit_code_;
};

// Runs a program to completion (with a deadline) and returns its exit code and output.
struct RunResult {
  int exit_code = -1;
  std::string output;
};
RunResult RunToCompletion(std::vector<std::string> argv,
                          std::map<std::string, std::string> env = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30),
                          const std::string& cwd = "");

}  // namespace cachesvc::testing
