// client/cachectl/commands.h: one function per cachectl command. Each takes the global options
// and its own parsed arguments, makes its calls through client/admin_client.h, prints a table or
// JSON (client/cachectl/output.h) and returns the process's exit code. Argument parsing and the
// command tree live in client/cachectl.cc; these stay thin.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "client/cachectl/inputs.h"
#include "client/cachectl/output.h"

namespace cachesvc::cachectl {

// Daemon-wide (commands_daemon.cc).
int Health(const Globals& g);
int Status(const Globals& g);
int Tiers(const Globals& g);
int Drain(const Globals& g, const std::string& timeout);
int HashToken();

// Sessions (commands_sessions.cc).
struct SessionsListArgs {
  std::string state = "all";
  std::uint32_t limit = 1000;
};
int SessionsList(const Globals& g, const SessionsListArgs& args);
int SessionsShow(const Globals& g, const std::string& id, bool tokens);
// `duration` of "0" unpins.
int SessionsPin(const Globals& g, const std::string& id, const std::string& duration);
int SessionsClose(const Globals& g, const std::string& id);

// Blocks (commands_blocks.cc).
int BlocksShow(const Globals& g, const std::string& key_hex);
struct PrefixArgs {
  std::string tokens_path;  // "-" = stdin
  std::string layout_path;  // optional TOML or JSON file
  LayoutFlags layout;
};
int Prefix(const Globals& g, const PrefixArgs& args);
struct EvictArgs {
  std::string key;      // hex
  std::string session;  // id
  bool all = false;
  std::string tier = "all";
};
int Evict(const Globals& g, const EvictArgs& args);

// Policy (commands_policy.cc).
int PolicyGet(const Globals& g);
int PolicySet(const Globals& g, const std::vector<std::string>& assignments);

// top (top.cc).
struct TopArgs {
  int interval_ms = 2000;
  int iterations = 0;  // 0: until q or Ctrl-C
  bool once = false;
  bool ansi = false;  // redraw in place even when stdout is not a terminal
};
int Top(const Globals& g, const TopArgs& args);

}  // namespace cachesvc::cachectl
