#include "client/cachectl/inputs.h"

#include <cctype>
#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/time/time.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "proto/layout.h"
#include "toml++/toml.h"

namespace cachesvc::cachectl {

namespace {

// Reads a whole stream through its buffer. Not std::istreambuf_iterator: GCC 12 at -O2 inlines
// its end-of-stream sentinel (a null streambuf) into a path it then reports as a null dereference
// (-Wnull-dereference), and the buffer copy is one loop either way.
[[nodiscard]] absl::StatusOr<std::string> ReadAll(std::istream& in, const std::string& name) {
  std::ostringstream text;
  if (in.peek() == std::char_traits<char>::eof()) return std::string();  // empty input
  text << in.rdbuf();
  if (in.bad() || text.fail()) {
    return absl::InvalidArgumentError(fmt::format("cannot read '{}'", name));
  }
  return text.str();
}

}  // namespace

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  if (path == "-") return ReadAll(std::cin, "<stdin>");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(fmt::format("cannot read '{}'", path));
  return ReadAll(in, path);
}

absl::StatusOr<std::vector<std::uint32_t>> ParseTokenIds(const std::string& text,
                                                         const std::string& source) {
  std::vector<std::uint32_t> ids;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_array()) {
      return absl::InvalidArgumentError(fmt::format("{}: not a JSON array of token ids", source));
    }
    for (std::size_t i = 0; i < doc.size(); ++i) {
      const auto& v = doc[i];
      if (!v.is_number_unsigned() || v.get<std::uint64_t>() > UINT32_MAX) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: element {} is {}, not a token id (0..4294967295)", source, i, v.dump()));
      }
      ids.push_back(v.get<std::uint32_t>());
    }
    return ids;
  }
  std::size_t line = 1;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '\n') ++line;
    if (std::isspace(static_cast<unsigned char>(c)) != 0 || c == ',') {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end])) == 0 &&
           text[end] != ',') {
      ++end;
    }
    const std::string word = text.substr(i, end - i);
    std::uint32_t id = 0;
    auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    if (ec != std::errc() || ptr != word.data() + word.size()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: line {}: '{}' is not a token id (0..4294967295)", source, line, word));
    }
    ids.push_back(id);
    i = end;
  }
  return ids;
}

namespace {

[[nodiscard]] absl::StatusOr<v1::Dtype> ParseDtype(const std::string& name) {
  if (name == "fp16") return v1::DTYPE_FP16;
  if (name == "bf16") return v1::DTYPE_BF16;
  if (name == "fp8_e4m3") return v1::DTYPE_FP8_E4M3;
  if (name == "fp32") return v1::DTYPE_FP32;
  return absl::InvalidArgumentError(
      fmt::format("dtype '{}': use fp16, bf16, fp8_e4m3 or fp32", name));
}

[[nodiscard]] absl::StatusOr<v1::AttentionKind> ParseAttention(const std::string& name) {
  if (name == "mha_gqa" || name == "mha" || name == "gqa") return v1::ATTENTION_MHA_GQA;
  if (name == "mla") return v1::ATTENTION_MLA;
  return absl::InvalidArgumentError(fmt::format("attention '{}': use mha_gqa or mla", name));
}

// The file as JSON: a TOML file goes through toml++'s JSON writer, so both forms are read by one
// piece of code.
[[nodiscard]] absl::StatusOr<nlohmann::json> LayoutDocument(const std::string& text,
                                                            const std::string& source) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return nlohmann::json::object();
  std::string json_text = text;
  if (text[first] != '{') {
    try {
      toml::table table = toml::parse(text, source);
      std::ostringstream out;
      out << toml::json_formatter{table};
      json_text = out.str();
    } catch (const toml::parse_error& e) {
      return absl::InvalidArgumentError(
          fmt::format("{}: line {}: {}", source, e.source().begin.line, e.description()));
    }
  }
  auto doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{}: not a JSON object", source));
  }
  if (doc.contains("layout")) doc = doc["layout"];
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{}: 'layout' is not a table", source));
  }
  return doc;
}

}  // namespace

absl::StatusOr<v1::ModelLayout> BuildLayout(const std::string& file_text, const std::string& source,
                                            const LayoutFlags& flags) {
  auto doc = LayoutDocument(file_text, source);
  if (!doc.ok()) return doc.status();
  LayoutFlags f;  // the file's values, then the flags over them
  for (auto it = doc->begin(); it != doc->end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& value = it.value();
    auto number = [&]() -> absl::StatusOr<std::uint32_t> {
      if (!value.is_number_unsigned() || value.get<std::uint64_t>() > UINT32_MAX) {
        return absl::InvalidArgumentError(
            fmt::format("{}: {} = {} is not a non-negative integer", source, name, value.dump()));
      }
      return value.get<std::uint32_t>();
    };
    auto text = [&]() -> absl::StatusOr<std::string> {
      if (!value.is_string()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: {} = {} is not a string", source, name, value.dump()));
      }
      return value.get<std::string>();
    };
    auto set = [](auto& field, auto parsed) -> absl::Status {
      if (!parsed.ok()) return parsed.status();
      field = *parsed;
      return absl::OkStatus();
    };
    absl::Status st;
    if (name == "model_id")
      st = set(f.model_id, text());
    else if (name == "num_layers")
      st = set(f.num_layers, number());
    else if (name == "num_kv_heads")
      st = set(f.num_kv_heads, number());
    else if (name == "head_dim")
      st = set(f.head_dim, number());
    else if (name == "dtype")
      st = set(f.dtype, text());
    else if (name == "block_tokens")
      st = set(f.block_tokens, number());
    else if (name == "tp_rank")
      st = set(f.tp_rank, number());
    else if (name == "tp_size")
      st = set(f.tp_size, number());
    else if (name == "attention")
      st = set(f.attention, text());
    else
      st = absl::InvalidArgumentError(fmt::format("{}: unknown layout field '{}'", source, name));
    if (!st.ok()) return st;
  }
  auto over = [](auto& field, const auto& flag) {
    if (flag.has_value()) field = flag;
  };
  over(f.model_id, flags.model_id);
  over(f.num_layers, flags.num_layers);
  over(f.num_kv_heads, flags.num_kv_heads);
  over(f.head_dim, flags.head_dim);
  over(f.dtype, flags.dtype);
  over(f.block_tokens, flags.block_tokens);
  over(f.tp_rank, flags.tp_rank);
  over(f.tp_size, flags.tp_size);
  over(f.attention, flags.attention);

  v1::ModelLayout layout;
  layout.set_model_id(f.model_id.value_or(""));
  layout.set_num_layers(f.num_layers.value_or(0));
  layout.set_num_kv_heads(f.num_kv_heads.value_or(0));
  layout.set_head_dim(f.head_dim.value_or(0));
  auto dtype = ParseDtype(f.dtype.value_or("fp16"));
  if (!dtype.ok()) return dtype.status();
  layout.set_dtype(*dtype);
  layout.set_block_tokens(f.block_tokens.value_or(0));
  layout.set_tp_rank(f.tp_rank.value_or(0));
  layout.set_tp_size(f.tp_size.value_or(1));
  auto attention = ParseAttention(f.attention.value_or("mha_gqa"));
  if (!attention.ok()) return attention.status();
  layout.set_attention(*attention);
  if (auto checked = ModelLayout::FromProto(layout); !checked.ok()) return checked.status();
  return layout;
}

std::uint64_t LayoutFingerprint(const v1::ModelLayout& layout) {
  auto checked = ModelLayout::FromProto(layout);
  return checked.ok() ? checked->Fingerprint() : 0;
}

absl::StatusOr<std::string> ParseKeyHex(const std::string& hex) {
  std::string_view digits = hex;
  if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
  if (digits.size() != 32) {
    return absl::InvalidArgumentError(fmt::format(
        "block key '{}': want 32 hex digits (16 bytes), got {} characters", hex, digits.size()));
  }
  std::string bytes;
  for (std::size_t i = 0; i < digits.size(); i += 2) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(digits.data() + i, digits.data() + i + 2, value, 16);
    if (ec != std::errc() || ptr != digits.data() + i + 2) {
      return absl::InvalidArgumentError(
          fmt::format("block key '{}': '{}' is not hex", hex, digits.substr(i, 2)));
    }
    bytes.push_back(static_cast<char>(value));
  }
  return bytes;
}

absl::StatusOr<std::uint32_t> ParseDurationMs(const std::string& text, std::uint32_t max_ms) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        fmt::format("duration '{}': use a number with a unit, e.g. 30s, 1500ms, 5m, 1h", text));
  }
  const std::int64_t ms = absl::ToInt64Milliseconds(d);
  if (ms > static_cast<std::int64_t>(max_ms)) {
    return absl::InvalidArgumentError(
        fmt::format("duration '{}' is over the limit of {} ms", text, max_ms));
  }
  return static_cast<std::uint32_t>(ms);
}

absl::StatusOr<std::vector<v1::PolicyKnob>> ParseKnobs(const std::vector<std::string>& args) {
  std::vector<v1::PolicyKnob> knobs;
  for (const std::string& arg : args) {
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(fmt::format("'{}' is not NAME=VALUE", arg));
    }
    v1::PolicyKnob knob;
    knob.set_name(arg.substr(0, eq));
    knob.set_value(arg.substr(eq + 1));
    knobs.push_back(std::move(knob));
  }
  if (knobs.empty()) return absl::InvalidArgumentError("policy set: give at least one NAME=VALUE");
  return knobs;
}

absl::StatusOr<v1::SessionState> ParseState(const std::string& name) {
  if (name == "all") return v1::SESSION_STATE_UNSPECIFIED;
  if (name == "running") return v1::SESSION_RUNNING;
  if (name == "waiting_tool" || name == "waiting") return v1::SESSION_WAITING_TOOL;
  if (name == "idle") return v1::SESSION_IDLE;
  if (name == "closed") return v1::SESSION_CLOSED;
  return absl::InvalidArgumentError(
      fmt::format("state '{}': use running, waiting_tool, idle, closed or all", name));
}

absl::StatusOr<v1::TierKind> ParseTier(const std::string& name) {
  if (name == "all") return v1::TIER_UNSPECIFIED;
  if (name == "hbm") return v1::TIER_HBM;
  if (name == "host") return v1::TIER_HOST;
  if (name == "nvme") return v1::TIER_NVME;
  return absl::InvalidArgumentError(fmt::format("tier '{}': use hbm, host, nvme or all", name));
}

}  // namespace cachesvc::cachectl
