// blocks show, prefix and evict: single blocks and prompts (AdminService, BlockService).
#include <iostream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cachectl/commands.h"
#include "fmt/format.h"

namespace cachesvc::cachectl {

int BlocksShow(const Globals& g, const std::string& key_hex) {
  auto key = ParseKeyHex(key_hex);
  if (!key.ok()) return UsageError(g, key.status());
  client::AdminClient client = NewClient(g);
  auto b = client.GetBlock(*key);
  if (!b.ok()) return ReportError(g, b.status());
  if (g.json) {
    PrintJson(ToJson(*b));
    return kExitOk;
  }
  const std::int64_t ago_ms = absl::ToUnixMillis(absl::Now()) - b->last_access_unix_ms();
  std::cout << "key          " << KeyHex(b->key().key()) << "\n"
            << "layout       " << fmt::format("{:016x}", b->layout_fingerprint()) << "\n"
            << "tiers        " << TierList(b->tiers()) << "\n"
            << "codec        " << CodecName(b->codec()) << "\n"
            << "length       " << b->length() << " bytes (" << Bytes(b->length()) << ")\n"
            << "checksum     " << fmt::format("{:016x}", b->checksum()) << " (XXH3-64)\n"
            << "sessions     " << b->sessions() << "\n"
            << "leases       " << b->leases() << "\n"
            << "accesses     " << b->accesses() << "\n"
            << "last access  "
            << (b->last_access_unix_ms() > 0 ? Millis(ago_ms) + " ago" : std::string("never"))
            << "\n";
  return kExitOk;
}

int Prefix(const Globals& g, const PrefixArgs& args) {
  auto text = ReadInput(args.tokens_path);
  if (!text.ok()) return UsageError(g, text.status());
  const std::string source = args.tokens_path == "-" ? "stdin" : args.tokens_path;
  auto tokens = ParseTokenIds(*text, source);
  if (!tokens.ok()) return UsageError(g, tokens.status());
  std::string layout_text;
  if (!args.layout_path.empty()) {
    auto file = ReadInput(args.layout_path);
    if (!file.ok()) return UsageError(g, file.status());
    layout_text = *file;
  }
  auto layout =
      BuildLayout(layout_text, args.layout_path.empty() ? "flags" : args.layout_path, args.layout);
  if (!layout.ok()) return UsageError(g, layout.status());

  client::AdminClient client = NewClient(g);
  auto engine = client.RegisterLookupEngine(*layout);
  if (!engine.ok()) return ReportError(g, engine.status());
  auto found = client.LookupPrefixTokens(engine->engine_id(), *tokens);
  if (!found.ok()) return ReportError(g, found.status());

  const std::uint64_t block_tokens = layout->block_tokens();
  const std::uint64_t full_blocks = tokens->size() / block_tokens;
  const std::uint64_t cached = found->cached_blocks();
  const std::uint64_t cached_tokens = cached * block_tokens;
  const std::uint64_t tail_tokens = tokens->size() - full_blocks * block_tokens;
  // A daemon that answers every full block's key (LookupPrefixResponse.keys) lets the table name
  // the blocks that are not cached too; an older one answers only the cached prefix.
  const bool all_keys = static_cast<std::uint64_t>(found->keys_size()) == full_blocks;
  const std::uint64_t rows = all_keys ? full_blocks : cached;
  auto key_of = [&](std::uint64_t i) {
    const int at = static_cast<int>(i);
    return KeyHex(i < cached ? found->blocks(at).key().key() : found->keys(at).key());
  };
  if (g.json) {
    nlohmann::json blocks = nlohmann::json::array();
    for (std::uint64_t i = 0; i < rows; ++i) {
      nlohmann::json b = i < cached ? ToJson(found->blocks(static_cast<int>(i)))
                                    : nlohmann::json{{"key", key_of(i)},
                                                     {"tiers", nlohmann::json::array()},
                                                     {"codec", "CODEC_UNSPECIFIED"}};
      b["index"] = i;
      b["first_token"] = i * block_tokens;
      b["cached"] = i < cached;
      blocks.push_back(std::move(b));
    }
    PrintJson({{"layout_fingerprint", fmt::format("{:016x}", engine->layout_fingerprint())},
               {"block_tokens", block_tokens},
               {"tokens", tokens->size()},
               {"full_blocks", full_blocks},
               {"cached_blocks", cached},
               {"cached_tokens", cached_tokens},
               {"tail_tokens", tail_tokens},
               {"blocks", blocks}});
    return kExitOk;
  }
  std::cout << "layout " << layout->model_id() << " "
            << fmt::format("{:016x}", engine->layout_fingerprint()) << ", " << block_tokens
            << " tokens per block\n";
  std::cout << fmt::format("{} of {} full blocks cached: tokens [0, {}) of {} need no prefill",
                           cached, full_blocks, cached_tokens, tokens->size());
  if (tail_tokens > 0) std::cout << fmt::format("; the last {} fill no block", tail_tokens);
  std::cout << "\n";
  if (full_blocks == 0) return kExitOk;
  std::cout << "\n";
  Table table({{"#", true}, {"TOKENS"}, {"KEY"}, {"TIERS"}, {"CODEC"}});
  for (std::uint64_t i = 0; i < rows; ++i) {
    const std::uint64_t first = i * block_tokens;
    const bool hit = i < cached;
    const auto* b = hit ? &found->blocks(static_cast<int>(i)) : nullptr;
    table.AddRow({std::to_string(i), fmt::format("{}..{}", first, first + block_tokens - 1),
                  key_of(i), hit ? TierList(b->tiers()) : "not cached",
                  hit ? CodecName(b->codec()) : "-"});
  }
  if (rows < full_blocks) {
    const std::uint64_t first = rows * block_tokens;
    table.AddRow({std::to_string(rows),
                  fmt::format("{}..{}", first, full_blocks * block_tokens - 1),
                  fmt::format("({} more blocks)", full_blocks - rows), "not cached", "-"});
  }
  table.Print(std::cout);
  return kExitOk;
}

int Evict(const Globals& g, const EvictArgs& args) {
  const int targets =
      (args.key.empty() ? 0 : 1) + (args.session.empty() ? 0 : 1) + (args.all ? 1 : 0);
  if (targets != 1) return UsageError(g, "evict: give exactly one of --key, --session or --all");
  auto tier = ParseTier(args.tier);
  if (!tier.ok()) return UsageError(g, tier.status());
  v1::EvictRequest request;
  request.set_tier(*tier);
  if (!args.key.empty()) {
    auto key = ParseKeyHex(args.key);
    if (!key.ok()) return UsageError(g, key.status());
    request.mutable_key()->set_key(*key);
  } else if (!args.session.empty()) {
    request.set_session_id(args.session);
  } else {
    request.set_all(true);
  }
  client::AdminClient client = NewClient(g);
  auto evicted = client.Evict(request);
  if (!evicted.ok()) return ReportError(g, evicted.status());
  if (g.json) {
    PrintJson({{"blocks_evicted", evicted->blocks_evicted()},
               {"bytes_freed", evicted->bytes_freed()},
               {"tier", v1::TierKind_Name(*tier)}});
  } else {
    std::cout << "evicted " << evicted->blocks_evicted() << " block"
              << (evicted->blocks_evicted() == 1 ? "" : "s") << " ("
              << Bytes(evicted->bytes_freed()) << " freed)"
              << (*tier == v1::TIER_UNSPECIFIED ? "" : " from " + TierName(*tier)) << "\n";
  }
  return kExitOk;
}

}  // namespace cachesvc::cachectl
