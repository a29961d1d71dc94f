#include "tiers/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <system_error>

#include "base/errno_message.h"
#include "fmt/format.h"

namespace cachesvc {
namespace {

// The pid the current holder wrote into the lock file, or "unknown".
std::string ReadHolder(int fd) {
  char buf[32] = {};
  const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  int pid = 0;
  if (n > 0 && std::from_chars(buf, buf + n, pid).ec == std::errc()) return fmt::format("{}", pid);
  return "unknown";
}

}  // namespace

absl::StatusOr<DataDir> DataDir::Open(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        fmt::format("cannot create data_dir '{}': {}", path.string(), ec.message()));
  }
  if (!std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(fmt::format("data_dir '{}' is not a folder", path.string()));
  }
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  if (ec) abs = path;
  const std::string lock_path = (abs / "LOCK").string();
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        fmt::format("cannot open '{}': {}", lock_path, ErrnoMessage(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = ReadHolder(fd);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(fmt::format(
          "data_dir '{}' is in use by another cachesvc (pid {})", abs.string(), holder));
    }
    return absl::PermissionDeniedError(
        fmt::format("cannot lock '{}': {}", lock_path, ErrnoMessage(err)));
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int err = errno;
    ::close(fd);
    return absl::PermissionDeniedError(
        fmt::format("cannot write '{}': {}", lock_path, ErrnoMessage(err)));
  }
  return DataDir(std::move(abs), fd);
}

DataDir::DataDir(DataDir&& other) noexcept
    : path_(std::move(other.path_)), lock_fd_(std::exchange(other.lock_fd_, -1)) {}

DataDir& DataDir::operator=(DataDir&& other) noexcept {
  if (this != &other) {
    if (lock_fd_ >= 0) ::close(lock_fd_);
    path_ = std::move(other.path_);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
  }
  return *this;
}

DataDir::~DataDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing the descriptor drops the flock
}

}  // namespace cachesvc
