// tiers/data_dir.h: the daemon's data folder, owned by exactly one process at a time.
//
// Every file cachesvc writes (NVMe slot files, RocksDB indexes, session store) lives under one
// folder. Opening it creates it if needed and takes an exclusive advisory lock on `<dir>/LOCK`
// (flock), recording the owner's pid there, so a second daemon pointed at the same folder is
// refused instead of corrupting the first one's files. The lock is released when the DataDir is
// destroyed or the process dies (the kernel drops flocks with the file descriptor).
//
// Not copyable; movable. Thread-compatible.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace cachesvc {

class DataDir {
 public:
  // Creates `path` (and parents) if missing and locks it. FAILED_PRECONDITION naming the holder's
  // pid if another process holds the lock; PERMISSION_DENIED or INVALID_ARGUMENT when the folder
  // cannot be created or is not a folder.
  [[nodiscard]] static absl::StatusOr<DataDir> Open(const std::filesystem::path& path);

  DataDir(DataDir&& other) noexcept;
  DataDir& operator=(DataDir&& other) noexcept;
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;
  ~DataDir();

  // Absolute path of the folder.
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  DataDir(std::filesystem::path path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}

  std::filesystem::path path_;
  int lock_fd_ = -1;
};

}  // namespace cachesvc
