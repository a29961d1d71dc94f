// sessions ls|show|pin|close: the caller's tenant's sessions (AdminService).
#include <iostream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cachectl/commands.h"
#include "fmt/format.h"

namespace cachesvc::cachectl {
namespace {

// "12s left" for a pin still running, "-" otherwise.
std::string PinnedFor(std::int64_t pinned_until_unix_ms) {
  const std::int64_t left = pinned_until_unix_ms - absl::ToUnixMillis(absl::Now());
  return left > 0 ? Millis(left) + " left" : "-";
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

std::string ToolCell(const v1::SessionInfo& s) {
  if (s.state() != v1::SESSION_WAITING_TOOL) return "-";
  return fmt::format("{} ({})", OrDash(s.tool_name()), Millis(s.expected_ms()));
}

}  // namespace

int SessionsList(const Globals& g, const SessionsListArgs& args) {
  auto state = ParseState(args.state);
  if (!state.ok()) return UsageError(g, state.status());
  client::AdminClient client = NewClient(g);
  auto sessions = client.ListAllSessions(*state, args.limit);
  if (!sessions.ok()) return ReportError(g, sessions.status());
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : *sessions) out.push_back(ToJson(s));
    PrintJson({{"address", g.address}, {"sessions", out}});
    return kExitOk;
  }
  Table table(
      {{"SESSION"}, {"NAME"}, {"STATE"}, {"TOOL"}, {"TOKENS", true}, {"PINNED"}, {"PARENT"}});
  for (const auto& s : *sessions) {
    table.AddRow({s.session_id(), OrDash(s.client_session_id()), StateName(s.state()), ToolCell(s),
                  std::to_string(s.context_tokens()), PinnedFor(s.pinned_until_unix_ms()),
                  OrDash(s.parent_session_id())});
  }
  table.Print(std::cout);
  if (sessions->size() == args.limit) {
    std::cerr << "cachectl: showing the first " << args.limit << " sessions (--limit)\n";
  }
  return kExitOk;
}

int SessionsShow(const Globals& g, const std::string& id, bool tokens) {
  client::AdminClient client = NewClient(g);
  auto s = client.GetSession(id, tokens);
  if (!s.ok()) return ReportError(g, s.status());
  if (g.json) {
    PrintJson(ToJson(*s));
    return kExitOk;
  }
  int cached = 0;
  for (const auto& b : s->blocks()) cached += b.tiers_size() > 0 ? 1 : 0;
  std::cout << "session      " << s->session_id() << "\n"
            << "name         " << OrDash(s->client_session_id()) << "\n"
            << "state        " << StateName(s->state()) << "\n";
  if (s->state() == v1::SESSION_WAITING_TOOL) {
    std::cout << "tool         " << ToolCell(*s) << "\n";
  }
  std::cout << "layout       " << fmt::format("{:016x}", s->layout_fingerprint()) << "\n"
            << "tokens       " << s->context_tokens() << "\n"
            << "blocks       " << s->blocks_size() << " full, " << cached << " cached\n"
            << "pinned       " << PinnedFor(s->pinned_until_unix_ms()) << "\n"
            << "parent       " << OrDash(s->parent_session_id()) << "\n";
  if (s->blocks_size() > 0) {
    std::cout << "\n";
    Table table({{"#", true}, {"KEY"}, {"TIERS"}, {"CODEC"}});
    for (int i = 0; i < s->blocks_size(); ++i) {
      const auto& b = s->blocks(i);
      table.AddRow({std::to_string(i), KeyHex(b.key().key()), TierList(b.tiers()),
                    b.tiers_size() > 0 ? CodecName(b.codec()) : "-"});
    }
    table.Print(std::cout);
  }
  if (tokens) {
    std::cout << "\ntoken ids:";
    for (std::uint32_t t : s->tokens()) std::cout << " " << t;
    std::cout << "\n";
  }
  return kExitOk;
}

int SessionsPin(const Globals& g, const std::string& id, const std::string& duration) {
  // The wire field is uint32 milliseconds: at most ~49 days.
  auto ms = ParseDurationMs(duration, UINT32_MAX);
  if (!ms.ok()) return UsageError(g, ms.status());
  client::AdminClient client = NewClient(g);
  if (absl::Status st = client.PinSession(id, *ms); !st.ok()) return ReportError(g, st);
  if (g.json) {
    PrintJson({{"session_id", id}, {"duration_ms", *ms}, {"pinned", *ms > 0}});
  } else if (*ms == 0) {
    std::cout << "unpinned " << id << "\n";
  } else {
    std::cout << "pinned " << id << " for " << Millis(*ms) << "\n";
  }
  return kExitOk;
}

int SessionsClose(const Globals& g, const std::string& id) {
  client::AdminClient client = NewClient(g);
  if (absl::Status st = client.CloseSession(id); !st.ok()) return ReportError(g, st);
  if (g.json) {
    PrintJson({{"session_id", id}, {"closed", true}});
  } else {
    std::cout << "closed " << id << "\n";
  }
  return kExitOk;
}

}  // namespace cachesvc::cachectl
