#include "tests/support/daemon.h"

#include <gtest/gtest.h>

#include <chrono>
#include <sstream>

#include "httplib.h"

namespace cachesvc::testing {

RunningDaemon::RunningDaemon(std::vector<std::string> argv, std::map<std::string, std::string> env)
    : process_(std::make_unique<Subprocess>(std::move(argv), std::move(env))) {
  if (auto line = process_->WaitForLine("listening on ", std::chrono::seconds(20))) {
    const auto at = line->find("listening on ") + 13;
    address_ = line->substr(at, line->find(' ', at) - at);
    const auto m = line->find("metrics ");
    if (m != std::string::npos) metrics_ = line->substr(m + 8, line->find(')', m) - m - 8);
  }
}

RunningDaemon::~RunningDaemon() {
  process_->ReadAvailable();
  const std::string& out = process_->output();
  for (const char* report : {"WARNING: ThreadSanitizer", "ERROR: AddressSanitizer",
                             "ERROR: LeakSanitizer", "runtime error: "}) {
    if (const auto at = out.find(report); at != std::string::npos) {
      ADD_FAILURE() << "the daemon printed a sanitizer report:\n"
                    << out.substr(at > 2000 ? at - 2000 : 0, 8000);
      return;
    }
  }
}

double RunningDaemon::Metric(const std::string& sample) const {
  httplib::Client http("http://" + metrics_);
  auto r = http.Get("/metrics");
  if (!r || r->status != 200) return -1;
  std::istringstream lines(r->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(sample + " ")) return std::stod(line.substr(sample.size() + 1));
  }
  return -1;
}

}  // namespace cachesvc::testing
