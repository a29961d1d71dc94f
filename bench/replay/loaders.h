// bench/replay/loaders.h: loaders that turn the public request traces in ../shared/traces (see
// SOURCES.md there) into the replay's in-memory Trace (bench/replay/trace.h).
//
// Contract, for every loader:
//   - The result's requests are sorted by t_us (a stable sort, so equal times keep file order).
//   - Block ids become keys with KeyForBlockId; ids from different files of one trace are offset
//     so that they never collide.
//   - Bad input: a malformed line (or request, in the one-object-per-file formats) is skipped and
//     named in Trace::warnings as "FILE:LINE: reason" (or "FILE: requests[i]: reason"), and the
//     rest is loaded; with `strict` the loader instead returns INVALID_ARGUMENT with that same
//     text. A file that cannot be opened is NOT_FOUND whatever `strict` says.
//   - Loaders are pure functions of their input files and options: no global state, safe to call
//     from several threads at once.
// The generated agent workload (bench/replay/agent_workload.h) is written in the Mooncake format
// plus session and tool fields, and LoadMooncake reads it back.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "bench/replay/trace.h"

namespace cachesvc::replay {

struct LoadOptions {
  bool strict = false;    // stop at the first malformed line (INVALID_ARGUMENT)
  std::size_t limit = 0;  // keep only the first `limit` requests after sorting; 0 = all
};

// Mooncake jsonl: one request a line, `timestamp` (ms, integer or fractional), `input_length`,
// `output_length`, `hash_ids` (one id per block). Blocks are `block_size` tokens (512 unless the
// line says otherwise, see below); the last block holds input_length - 512*(n-1) tokens, clamped
// to [1, 512]. Session 0, no tool calls, for the public Mooncake files. Optional extension fields,
// written by WriteMooncakeJsonl: `session_id` (unsigned integer), `block_size` (tokens per block),
// `tool_name`, `tool_start_ms`, `tool_end_ms` (both or neither, start <= end); a session's request
// that follows one with a tool call is marked resume. Blank lines are skipped silently.
[[nodiscard]] absl::StatusOr<Trace> LoadMooncake(const std::string& path,
                                                 const LoadOptions& options = {});

struct KvCacheTesterOptions {
  std::size_t users =
      1;  // conversations replayed at once: the first `users` files by name; 0 = all
  double stagger_s = 30;  // user k starts at k * stagger_s seconds
  LoadOptions load;
};

// kv-cache-tester v8: `folder` holds trace_NNNN.json files (or is the folder the tarball extracts
// to, holding traces/). See docs/replay-workloads.md for the mapping: ids offset by (file index
// << 32), 64-token blocks, one session per conversation and per sub-agent, tool calls derived from
// `stop: tool_use` and `api_time`. The options are spelled out in Trace::name.
[[nodiscard]] absl::StatusOr<Trace> LoadKvCacheTester(const std::string& folder,
                                                      const KvCacheTesterOptions& options = {});

// Extracts the kv-cache-tester tarball (`tar -xJf TARBALL -C DEST_DIR`, DEST_DIR created if
// missing) and returns the folder of trace files to pass to LoadKvCacheTester. INTERNAL if tar
// fails.
[[nodiscard]] absl::StatusOr<std::string> ExtractKvCacheTesterTarball(const std::string& tarball,
                                                                      const std::string& dest_dir);

// RAGPulse: `trace_path` is the 0_trace.jsonl file (name ending in "0_trace.jsonl"); the part
// length files beside it share its prefix (PREFIX1_sys_prompt.jsonl, PREFIX2_passages.jsonl,
// PREFIX3_history.jsonl, PREFIX4_user_input.jsonl, PREFIX5_web_search.jsonl). Each part id is one
// block of its own token length, in the order system prompt, passages, history, web search, user
// input. Timestamps (seconds, strings or numbers) are sorted; session = FNV-1a of session_id.
[[nodiscard]] absl::StatusOr<Trace> LoadRagPulse(const std::string& trace_path,
                                                 const LoadOptions& options = {});

}  // namespace cachesvc::replay
