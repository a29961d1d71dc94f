// cachectl: the operators' command-line client of a running cachesvc. This file is the command
// tree (CLI11): names, flags, help and examples; each command's work is one function in
// client/cachectl/commands.h. docs/cachectl.md is the manual.
//
// Exit codes: 0 success; 1 the daemon answered no (not found, not serving, not offered,
// unauthenticated, wrong state); 2 usage error (also a value the daemon rejected as invalid);
// 3 the daemon cannot be reached.
#include <cstdlib>
#include <iostream>
#include <string>

#include "base/cli11.h"
#include "cachesvc/version.h"
#include "client/cachectl/commands.h"
#include "client/cachectl/completion.h"
#include "fmt/format.h"

namespace cachesvc::cachectl {
namespace {

// Set by the global options' callbacks once parsing has succeeded.
struct Files {
  std::string token_file;
  std::string tls_root;
};

// Reads --token-file and --tls-root into the globals. A token file holds the token on its first
// line (trailing newline and spaces dropped).
int LoadFiles(Globals& g, const Files& files) {
  if (!files.token_file.empty()) {
    auto text = ReadInput(files.token_file);
    if (!text.ok()) return UsageError(g, text.status());
    std::string token = text->substr(0, text->find('\n'));
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
    if (token.empty()) return UsageError(g, "--token-file " + files.token_file + " is empty");
    g.token = token;
  }
  if (!files.tls_root.empty()) {
    auto pem = ReadInput(files.tls_root);
    if (!pem.ok()) return UsageError(g, pem.status());
    g.tls_root_pem = *pem;
  }
  return kExitOk;
}

template <typename T>
void SetIfGiven(std::optional<T>& field, const CLI::Option* option, const T& value) {
  if (option->count() > 0) field = value;
}

// The command tree; returns the exit code.
int Main(int argc, char** argv) {
  CLI::App app{"cachectl: inspect and control a running cachesvc daemon", "cachectl"};
  app.set_version_flag("--version", fmt::format("cachectl {} (commit {})", cachesvc::kVersion,
                                                cachesvc::kGitCommit));
  // Global options may come before or after the command (`cachectl sessions ls --json`).
  app.fallthrough();
  app.require_subcommand(1);
  Globals g;
  Files files;
  app.add_option("--addr", g.address, "daemon address, host:port or unix:/path")
      ->envname("CACHESVC_ADDR")
      ->capture_default_str();
  app.add_option("--token", g.token,
                 "bearer token of a tenant, sent as 'authorization: Bearer <token>'")
      ->envname("CACHESVC_TOKEN");
  app.add_option("--token-file", files.token_file, "read the token from this file's first line")
      ->excludes("--token");
  app.add_option("--tls-root", files.tls_root,
                 "PEM file of the CA that signed the daemon's certificate: use TLS");
  app.add_option("--tls-server-name", g.tls_server_name,
                 "name to check in the daemon's certificate instead of the address's host");
  app.add_option("--metrics", g.metrics_address,
                 "host:port of the daemon's /metrics (its metrics_listen), for top")
      ->envname("CACHESVC_METRICS");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline of each call in milliseconds")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_flag("--json", g.json, "print JSON for scripts instead of a table");

  auto* health =
      app.add_subcommand("health", "ask whether the daemon is SERVING (exit 0) or not (1)");
  auto* status = app.add_subcommand("status", "version, uptime, state and counts of the daemon");
  auto* tiers = app.add_subcommand("tiers", "each tier's capacity, use, blocks, leases, faults");

  auto* sessions = app.add_subcommand("sessions", "the token's tenant's sessions");
  sessions->require_subcommand(1);
  SessionsListArgs ls_args;
  auto* sessions_ls = sessions->add_subcommand("ls", "list sessions (all pages)");
  sessions_ls->alias("list");
  sessions_ls->add_option("--state", ls_args.state, "running, waiting_tool, idle, closed or all")
      ->capture_default_str();
  sessions_ls->add_option("--limit", ls_args.limit, "list at most this many")
      ->check(CLI::Range(1u, 10000000u))
      ->capture_default_str();
  std::string session_id;
  bool show_tokens = false;
  auto* sessions_show =
      sessions->add_subcommand("show", "one session: state, tool call, pin, blocks and tiers");
  sessions_show->add_option("SESSION", session_id, "session id")->required();
  sessions_show->add_flag("--tokens", show_tokens, "also print the context's token ids");
  std::string pin_for;
  auto* sessions_pin = sessions->add_subcommand(
      "pin", "keep a session's blocks in a fast tier for a while (--for 0 unpins)");
  sessions_pin->add_option("SESSION", session_id, "session id")->required();
  sessions_pin->add_option("--for", pin_for, "how long: 30s, 5m, 1h; 0 unpins")->required();
  auto* sessions_close = sessions->add_subcommand("close", "close a session");
  sessions_close->add_option("SESSION", session_id, "session id")->required();
  sessions->footer(
      "Examples:\n"
      "  cachectl sessions ls --state waiting_tool\n"
      "  cachectl sessions show s-4f1c2e --tokens\n"
      "  cachectl sessions pin s-4f1c2e --for 2m\n"
      "  cachectl sessions close s-4f1c2e");

  auto* blocks = app.add_subcommand("blocks", "single blocks");
  blocks->require_subcommand(1);
  std::string key;
  auto* blocks_show =
      blocks->add_subcommand("show", "one block: tiers, codec, length, checksum, users");
  blocks_show->add_option("KEY", key, "block key, 32 hex digits (as sessions show prints)")
      ->required();

  PrefixArgs prefix_args;
  auto* prefix =
      app.add_subcommand("prefix", "which blocks of a prompt are cached, and in which tiers");
  prefix
      ->add_option("--tokens", prefix_args.tokens_path,
                   "file of token ids (whitespace/comma separated or a JSON array); - = stdin")
      ->required();
  prefix->add_option("--layout", prefix_args.layout_path,
                     "the engine's model layout, a TOML or JSON file (fields of ModelLayout)");
  std::string model, dtype, attention;
  std::uint32_t layers = 0, kv_heads = 0, head_dim = 0, block_tokens = 0, tp_rank = 0, tp_size = 1;
  auto* o_model = prefix->add_option("--model", model, "layout model_id");
  auto* o_layers = prefix->add_option("--layers", layers, "layout num_layers");
  auto* o_heads = prefix->add_option("--kv-heads", kv_heads, "layout num_kv_heads");
  auto* o_dim = prefix->add_option("--head-dim", head_dim, "layout head_dim");
  auto* o_dtype = prefix->add_option("--dtype", dtype, "fp16 (default), bf16, fp8_e4m3, fp32");
  auto* o_block = prefix->add_option("--block-tokens", block_tokens, "tokens per block");
  auto* o_rank = prefix->add_option("--tp-rank", tp_rank, "tensor-parallel rank (default 0)");
  auto* o_size = prefix->add_option("--tp-size", tp_size, "tensor-parallel size (default 1)");
  auto* o_attn = prefix->add_option("--attention", attention, "mha_gqa (default) or mla");
  prefix->footer(
      "The layout is the engine's (the daemon derives block keys from the tokens, the tenant's\n"
      "salt and the layout's fingerprint): give a file, flags, or a file with flags over it.\n"
      "Examples:\n"
      "  cachectl prefix --tokens prompt.txt --layout llama-3.1-8b.toml\n"
      "  cachectl prefix --tokens prompt.json --model llama-3.1-8b --layers 32 --kv-heads 8 \\\n"
      "      --head-dim 128 --dtype bf16 --block-tokens 16");

  EvictArgs evict_args;
  auto* evict = app.add_subcommand(
      "evict", "drop the tenant's blocks: one key, a session's own blocks, or all");
  auto* e_key = evict->add_option("--key", evict_args.key, "one block key (32 hex digits)");
  auto* e_session =
      evict->add_option("--session", evict_args.session, "blocks only this session references");
  auto* e_all = evict->add_flag("--all", evict_args.all, "every block not leased");
  e_key->excludes(e_session)->excludes(e_all);
  e_session->excludes(e_all);
  evict->add_option("--tier", evict_args.tier, "only from this tier: hbm, host, nvme or all")
      ->capture_default_str();
  evict->footer(
      "Examples:\n"
      "  cachectl evict --key 6f1d0c8a9b7e4f3a2c1b0d9e8f7a6b5c\n"
      "  cachectl evict --session s-4f1c2e --tier host\n"
      "  cachectl evict --all");

  auto* policy = app.add_subcommand("policy", "the placement policy and its knobs");
  policy->require_subcommand(1);
  auto* policy_get = policy->add_subcommand("get", "the active policy and each knob's value");
  std::vector<std::string> assignments;
  auto* policy_set = policy->add_subcommand(
      "set", "change knobs, all or none (the daemon checks every one first)");
  policy_set->add_option("NAME=VALUE", assignments, "knobs to set")->required();
  policy->footer(
      "Examples:\n"
      "  cachectl policy get\n"
      "  cachectl policy set prefetch_lead_ms=500 tool_keep_factor=1.5");

  std::string grace;
  auto* drain = app.add_subcommand(
      "drain", "refuse new sessions from now on (before a restart; call it on the daemon's host)");
  drain->add_option("--grace", grace, "how long outstanding transfers may take (default: config)");

  TopArgs top_args;
  auto* top = app.add_subcommand("top", "live view: tiers, hit rates, sessions, leases, RPC rates");
  top->add_option("--interval-ms", top_args.interval_ms, "time between frames")
      ->check(CLI::Range(50, 3600000))
      ->capture_default_str();
  auto* t_iter = top->add_option("--iterations", top_args.iterations, "stop after this many frames")
                     ->check(CLI::Range(1, 1000000));
  top->add_flag("--once", top_args.once, "print one frame and exit")->excludes(t_iter);
  top->add_flag("--ansi", top_args.ansi, "redraw in place even when stdout is not a terminal");
  top->footer(
      "q or Ctrl-C quits. Hit and RPC rates come from the daemon's /metrics (--metrics).\n"
      "Examples:\n"
      "  cachectl top --metrics 127.0.0.1:9464\n"
      "  cachectl top --once --json");

  std::string shell;
  auto* completion = app.add_subcommand("completion", "print a shell completion script");
  completion->add_option("SHELL", shell, "bash or zsh")
      ->check(CLI::IsMember({"bash", "zsh"}))
      ->required();
  completion->footer(
      "Examples:\n"
      "  source <(cachectl completion bash)\n"
      "  cachectl completion bash > /etc/bash_completion.d/cachectl\n"
      "  echo 'source <(cachectl completion zsh)' >> ~/.zshrc");

  auto* hash_token = app.add_subcommand(
      "hash-token",
      "read a bearer token (one line) from stdin and print its SHA-256 for a tenant's "
      "token_sha256 in the daemon's config; talks to no daemon");
  app.footer(
      "Examples:\n"
      "  cachectl status\n"
      "  cachectl --addr 10.0.0.5:50051 --token-file prod.token sessions ls\n"
      "  cachectl sessions show s-4f1c2e --json | jq '.blocks[].tiers'\n"
      "  cachectl prefix --tokens prompt.txt --layout layout.toml\n"
      "  cachectl top --metrics 127.0.0.1:9464\n"
      "  openssl rand -hex 32 | tee token.txt | cachectl hash-token\n"
      "Environment: CACHESVC_ADDR, CACHESVC_TOKEN, CACHESVC_METRICS.\n"
      "Exit codes: 0 ok; 1 not found, or the daemon said no (not serving, unauthenticated,\n"
      "not offered, wrong state); 2 usage; 3 cannot reach the daemon. See docs/cachectl.md.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "cachectl: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }
  if (int rc = LoadFiles(g, files); rc != kExitOk) return rc;

  if (health->parsed()) return Health(g);
  if (status->parsed()) return Status(g);
  if (tiers->parsed()) return Tiers(g);
  if (sessions_ls->parsed()) return SessionsList(g, ls_args);
  if (sessions_show->parsed()) return SessionsShow(g, session_id, show_tokens);
  if (sessions_pin->parsed()) return SessionsPin(g, session_id, pin_for);
  if (sessions_close->parsed()) return SessionsClose(g, session_id);
  if (blocks_show->parsed()) return BlocksShow(g, key);
  if (prefix->parsed()) {
    SetIfGiven(prefix_args.layout.model_id, o_model, model);
    SetIfGiven(prefix_args.layout.num_layers, o_layers, layers);
    SetIfGiven(prefix_args.layout.num_kv_heads, o_heads, kv_heads);
    SetIfGiven(prefix_args.layout.head_dim, o_dim, head_dim);
    SetIfGiven(prefix_args.layout.dtype, o_dtype, dtype);
    SetIfGiven(prefix_args.layout.block_tokens, o_block, block_tokens);
    SetIfGiven(prefix_args.layout.tp_rank, o_rank, tp_rank);
    SetIfGiven(prefix_args.layout.tp_size, o_size, tp_size);
    SetIfGiven(prefix_args.layout.attention, o_attn, attention);
    return Prefix(g, prefix_args);
  }
  if (evict->parsed()) return Evict(g, evict_args);
  if (policy_get->parsed()) return PolicyGet(g);
  if (policy_set->parsed()) return PolicySet(g, assignments);
  if (drain->parsed()) return Drain(g, grace);
  if (top->parsed()) return Top(g, top_args);
  if (completion->parsed()) {
    std::cout << (shell == "zsh" ? ZshCompletion(app) : BashCompletion(app));
    return kExitOk;
  }
  if (hash_token->parsed()) return HashToken();
  return kExitUsage;
}

}  // namespace
}  // namespace cachesvc::cachectl

int main(int argc, char** argv) { return cachesvc::cachectl::Main(argc, argv); }
