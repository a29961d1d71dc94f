// bench/replay/trace_internal.h: helpers the trace loaders share (not part of the loaders' API).
// Bad-input reporting with the strict/lenient choice, checked JSON field access that never
// throws, line reading, sorting and the resume derivation. Stateless apart from BadInput, which
// one loader call owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "bench/replay/trace.h"
#include "nlohmann/json.hpp"

namespace cachesvc::replay::internal {

// Collects warnings for one load. Report() returns OK (warning kept) or, when strict,
// INVALID_ARGUMENT carrying the same text. At most kMaxListed warnings are listed; Finish() adds
// one line counting the rest.
class BadInput {
 public:
  static constexpr std::size_t kMaxListed = 100;
  BadInput(bool strict, Trace* trace) : strict_(strict), trace_(trace) {}
  [[nodiscard]] absl::Status Report(const std::string& where, const std::string& reason);
  void Finish();
  [[nodiscard]] std::size_t count() const { return count_; }

 private:
  bool strict_;
  Trace* trace_;
  std::size_t count_ = 0;
};

// Reads every line of `path` (without the newline). NOT_FOUND if it cannot be opened.
[[nodiscard]] absl::Status ReadLines(const std::string& path, std::vector<std::string>* lines);

// Field access on a JSON object: nullopt when missing or of the wrong type / out of range.
std::optional<std::uint64_t> GetUnsigned(const nlohmann::json& obj, const char* key);
std::optional<double> GetNumber(const nlohmann::json& obj, const char* key);  // finite only
// A non-negative integer array; nullopt (and *reason set) otherwise.
std::optional<std::vector<std::uint64_t>> GetIdArray(const nlohmann::json& obj, const char* key,
                                                     std::string* reason);

// Whole seconds/milliseconds to microseconds, rounded to nearest.
std::int64_t SecondsToUs(double s);
std::int64_t MillisToUs(double ms);

// Fills blocks/block_tokens for `ids` of nominal `block_tokens` each: every block full except the
// last, which holds input_tokens - block_tokens*(n-1) clamped to [1, block_tokens].
void SetFixedBlocks(const std::vector<std::uint64_t>& ids, std::uint32_t block_tokens,
                    std::uint64_t id_offset, TraceRequest* req);

// Stable sort by t_us, then truncation to `limit` (0 = none).
void SortAndLimit(std::size_t limit, Trace* trace);

// Marks resume on each session's request (session != 0) that follows, in time order, a request
// of the same session with a tool call. Requires the trace sorted.
void DeriveResumes(Trace* trace);

// 64-bit FNV-1a; never 0 (0 means "no session" in TraceRequest).
std::uint64_t SessionHash(std::string_view s);

}  // namespace cachesvc::replay::internal
