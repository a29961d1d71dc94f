// Runs the C program tests/client/c_abi_test.c (built as C, linked only against
// libcachesvc_client.so) against a real daemon, and checks that the shared library exports the C
// ABI and nothing else.
#include <gtest/gtest.h>

#include <sstream>

#include "tests/client/connector_test_util.h"
#include "tests/support/subprocess.h"

namespace cachesvc::testing {
namespace {

TEST(ConnectorCAbiTest, TheCProgramPassesAgainstARealDaemon) {
  ConnectorDaemon daemon("c_abi");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  const RunResult r = RunToCompletion({C_ABI_TEST_BIN, daemon.address(), kConnectorToken}, {},
                                      std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("all checks passed"), std::string::npos) << r.output;
}

TEST(ConnectorCAbiTest, TheSharedLibraryExportsOnlyTheCAbi) {
  const RunResult r = RunToCompletion({"/usr/bin/nm", "-D", "--defined-only", CLIENT_SO});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  int exported = 0;
  for (std::string line; std::getline(lines, line);) {
    // "ADDRESS TYPE NAME@@VERSION"; the version node itself is "0 A CACHESVC_CLIENT_1".
    std::string name = line.substr(line.rfind(' ') + 1);
    if (name == "CACHESVC_CLIENT_1") continue;
    name = name.substr(0, name.find('@'));
    EXPECT_EQ(name.rfind("cachesvc_", 0), 0u) << "exported: " << line;
    ++exported;
  }
  EXPECT_GE(exported, 12) << r.output;
}

}  // namespace
}  // namespace cachesvc::testing
