#include "tiers/data_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace cachesvc {
namespace {

std::filesystem::path FreshDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("data_dir_test_" + name);
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(DataDirTest, CreatesFolderAndRecordsPid) {
  const auto dir = FreshDir("create") / "nested";
  auto data = DataDir::Open(dir);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  EXPECT_TRUE(data->path().is_absolute());
  std::ifstream lock(dir / "LOCK");
  int pid = 0;
  lock >> pid;
  EXPECT_EQ(pid, ::getpid());
}

TEST(DataDirTest, SecondOpenIsRefusedUntilFirstCloses) {
  const auto dir = FreshDir("exclusive");
  {
    auto first = DataDir::Open(dir);
    ASSERT_TRUE(first.ok());
    auto second = DataDir::Open(dir);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("in use by another cachesvc (pid " +
                                             std::to_string(::getpid())),
              std::string::npos)
        << second.status();
    // Moving keeps the lock held.
    DataDir moved = std::move(*first);
    EXPECT_FALSE(DataDir::Open(dir).ok());
  }
  EXPECT_TRUE(DataDir::Open(dir).ok());
}

TEST(DataDirTest, FileInTheWayIsAnError) {
  const auto dir = FreshDir("file");
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "plain") << "x";
  auto data = DataDir::Open(dir / "plain");
  EXPECT_FALSE(data.ok());
}

}  // namespace
}  // namespace cachesvc
