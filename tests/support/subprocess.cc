#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace cachesvc::testing {
namespace {

[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::abort();
}

}  // namespace

Subprocess::Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env,
                       const std::string& cwd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) Die("pipe2");
  // Build argv and envp before fork: the child may only call async-signal-safe functions.
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string var(*e);
    const auto eq = var.find('=');
    if (eq != std::string::npos) merged[var.substr(0, eq)] = var.substr(eq + 1);
  }
  for (auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings;
  for (auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) Die("fork");
  if (pid_ == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) _exit(126);
    ::execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  ::close(fds[1]);
  out_fd_ = fds[0];
}

Subprocess::~Subprocess() {
  if (!exit_code_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::size_t Subprocess::Pump(std::chrono::milliseconds timeout) {
  if (out_fd_ < 0) return 0;
  pollfd pfd{out_fd_, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return 0;
  char buf[4096];
  const ssize_t n = ::read(out_fd_, buf, sizeof(buf));
  if (n <= 0) {
    ::close(out_fd_);
    out_fd_ = -1;
    return 0;
  }
  output_.append(buf, static_cast<std::size_t>(n));
  return static_cast<std::size_t>(n);
}

std::optional<std::string> Subprocess::WaitForLine(const std::string& needle,
                                                   std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Look for the needle in complete lines not yet scanned.
    std::size_t eol;
    while ((eol = output_.find('\n', scanned_)) != std::string::npos) {
      std::string line = output_.substr(scanned_, eol - scanned_);
      scanned_ = eol + 1;
      if (line.find(needle) != std::string::npos) return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    if (out_fd_ < 0) return std::nullopt;  // the child closed its output; nothing more will come
    Pump(std::min(left, std::chrono::milliseconds(100)));
  }
}

void Subprocess::Signal(int signal_number) {
  if (!exit_code_) ::kill(pid_, signal_number);
}

namespace {

// The state letter of /proc/PID/stat (R, S, T, Z, ...), or 0 when the process is gone.
char ProcState(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  const std::size_t paren = line.rfind(')');  // the command name may hold spaces
  return paren == std::string::npos || paren + 2 >= line.size() ? 0 : line[paren + 2];
}

bool WaitForState(pid_t pid, std::string_view states, bool gone_counts,
                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const char s = ProcState(pid);
    if (s == 0 ? gone_counts : states.find(s) != std::string_view::npos) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

bool Subprocess::WaitUntilStopped(std::chrono::milliseconds timeout) {
  return WaitForState(pid_, "Tt", /*gone_counts=*/false, timeout);
}

bool Subprocess::WaitUntilDead(std::chrono::milliseconds timeout) {
  return WaitForState(pid_, "ZX", /*gone_counts=*/true, timeout);
}

std::optional<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      while (Pump(std::chrono::milliseconds(0)) > 0) {
      }
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    Pump(std::chrono::milliseconds(20));
  }
}

RunResult RunToCompletion(std::vector<std::string> argv, std::map<std::string, std::string> env,
                          std::chrono::milliseconds timeout, const std::string& cwd) {
  Subprocess p(std::move(argv), std::move(env), cwd);
  RunResult result;
  result.exit_code = p.Wait(timeout).value_or(-1);
  result.output = p.output();
  return result;
}

}  // namespace cachesvc::testing
