// tests/support/pch.h: the precompiled header of every test binary in tests/CMakeLists.txt
// (cachesvc_test()). Parsing GoogleTest, gRPC and the generated protobuf code is most of a test
// file's compile time; compiled once per build folder and reused by every test target, it
// roughly halves the test build. Only third-party and standard headers belong here: the
// project's own headers stay included where they are used, so each test still says what it
// depends on.
#pragma once

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"
