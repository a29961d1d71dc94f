// client/cachectl/inputs.h: parsing what a user hands cachectl besides flags: token-id files,
// model layouts (a TOML or JSON file, overridden by flags), block keys in hex, durations, policy
// knobs, and the short names of states and tiers. Pure functions; every error is
// INVALID_ARGUMENT naming the bad value and where it was, which cachectl turns into exit code 2.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.pb.h"

namespace cachesvc::cachectl {

// The contents of `path`, or of stdin when `path` is "-".
[[nodiscard]] absl::StatusOr<std::string> ReadInput(const std::string& path);

// Token ids: a JSON array of integers ("[1, 2, 3]"), or integers separated by whitespace and/or
// commas ("1 2 3", "1,2,3", one per line). Each must fit in 32 bits. `source` names the input in
// errors.
[[nodiscard]] absl::StatusOr<std::vector<std::uint32_t>> ParseTokenIds(const std::string& text,
                                                                       const std::string& source);

// A model layout's fields as given on the command line; unset ones come from the file.
struct LayoutFlags {
  std::optional<std::string> model_id;
  std::optional<std::uint32_t> num_layers;
  std::optional<std::uint32_t> num_kv_heads;
  std::optional<std::uint32_t> head_dim;
  std::optional<std::string> dtype;  // fp16, bf16, fp8_e4m3, fp32
  std::optional<std::uint32_t> block_tokens;
  std::optional<std::uint32_t> tp_rank;
  std::optional<std::uint32_t> tp_size;
  std::optional<std::string> attention;  // mha_gqa, mla
};

// A layout from `file_text` (TOML, or JSON when it starts with '{'; the fields are those of
// cachesvc.v1.ModelLayout, at the top level or under a "layout" table) with `flags` applied over
// it; `file_text` may be empty. Checked the way the daemon checks it (proto/layout.h), so a
// mistake is found before any call. tp_size defaults to 1 and attention to mha_gqa.
[[nodiscard]] absl::StatusOr<v1::ModelLayout> BuildLayout(const std::string& file_text,
                                                          const std::string& source,
                                                          const LayoutFlags& flags);

// The XXH3-64 fingerprint the daemon will give `layout` (valid layouts only).
std::uint64_t LayoutFingerprint(const v1::ModelLayout& layout);

// 32 hex digits (either case, "0x" prefix allowed) -> the key's 16 wire bytes.
[[nodiscard]] absl::StatusOr<std::string> ParseKeyHex(const std::string& hex);

// "30s", "1500ms", "5m", "1h30m", "0" -> milliseconds, within [0, max_ms].
[[nodiscard]] absl::StatusOr<std::uint32_t> ParseDurationMs(const std::string& text,
                                                            std::uint32_t max_ms);

// "NAME=VALUE" arguments -> knobs. The name may not be empty; the value may (the daemon decides).
[[nodiscard]] absl::StatusOr<std::vector<v1::PolicyKnob>> ParseKnobs(
    const std::vector<std::string>& args);

// "running", "waiting_tool" (or "waiting"), "idle", "closed", "all" -> the state (all:
// UNSPECIFIED).
[[nodiscard]] absl::StatusOr<v1::SessionState> ParseState(const std::string& name);
// "hbm", "host", "nvme", "all" -> the tier (all: UNSPECIFIED).
[[nodiscard]] absl::StatusOr<v1::TierKind> ParseTier(const std::string& name);

}  // namespace cachesvc::cachectl
