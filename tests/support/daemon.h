// tests/support/daemon.h: a cachesvc daemon started by an integration test: the child process,
// the gRPC and metrics addresses it printed in its "listening on" line, and one sample of its
// /metrics. Tests build the argv (config file, tiers, tenants) themselves.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace cachesvc::testing {

class RunningDaemon {
 public:
  // Starts `argv` and waits (20 s at most) for its "listening on" line; address() is empty if it
  // never came (the output says why).
  // `env` is added to the child's environment.
  explicit RunningDaemon(std::vector<std::string> argv,
                         std::map<std::string, std::string> env = {});
  // Fails the running test when the daemon printed a sanitizer report (a data race, a heap
  // error, undefined behaviour): under the sanitizer presets the daemon is instrumented too, and
  // its reports go to its own output, which nothing else reads.
  ~RunningDaemon();
  RunningDaemon(const RunningDaemon&) = delete;
  RunningDaemon& operator=(const RunningDaemon&) = delete;

  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_; }
  // The value of one sample of /metrics (its full name with labels), -1 if absent or unreachable.
  double Metric(const std::string& sample) const;
  Subprocess& process() { return *process_; }

 private:
  std::unique_ptr<Subprocess> process_;
  std::string address_;
  std::string metrics_;
};

}  // namespace cachesvc::testing
