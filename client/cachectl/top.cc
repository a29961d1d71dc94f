// top: a live view of the daemon, redrawn in place like htop, from the Admin RPCs (status, tiers,
// the caller's sessions) and, with --metrics, the daemon's Prometheus /metrics (daemon-wide
// sessions by state, block hits and misses, RPC rates, data-plane bytes). Rates are the change
// between two consecutive samples over the time between them, so the first frame has none.
//
// Terminal: plain ANSI escapes, no curses. In place means: home the cursor, rewrite each line
// and clear what is left of it and of the screen below. When stdout is not a terminal (and no
// --ansi) frames are printed one after another, like `top -b`. q or Ctrl-C quits.
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <iostream>
#include <optional>
#include <sstream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cachectl/commands.h"
#include "client/cachectl/metrics_text.h"
#include "fmt/format.h"

namespace cachesvc::cachectl {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int /*signal*/) { g_stop = 1; }

// One reading of the daemon.
struct Sample {
  std::chrono::steady_clock::time_point at;
  std::int64_t unix_ms = 0;
  absl::Status error;  // of GetStatus or ListTiers: nothing else in the frame is valid
  v1::GetStatusResponse status;
  v1::ListTiersResponse tiers;
  std::map<std::string, double> sessions;  // by StateName
  std::string sessions_source;             // "daemon" (/metrics) or "tenant" (ListSessions)
  std::string sessions_error;
  bool have_metrics = false;
  std::string metrics_error;
  double hits = 0;
  double misses = 0;
  double load_bytes = 0;
  double save_bytes = 0;
  double leases_read = 0;
  double leases_write = 0;
  std::map<std::string, double> rpc_by_method;  // cumulative counts
};

Sample Take(client::AdminClient& client, const Globals& g) {
  Sample s;
  s.at = std::chrono::steady_clock::now();
  s.unix_ms = absl::ToUnixMillis(absl::Now());
  auto status = client.GetStatus();
  if (!status.ok()) {
    s.error = status.status();
    return s;
  }
  s.status = *status;
  auto tiers = client.ListTiers();
  if (!tiers.ok()) {
    s.error = tiers.status();
    return s;
  }
  s.tiers = *tiers;
  if (!g.metrics_address.empty()) {
    auto body = FetchMetrics(g.metrics_address, std::chrono::milliseconds(g.timeout_ms));
    auto samples = body.ok() ? ParseMetricsText(*body)
                             : absl::StatusOr<std::vector<MetricSample>>(body.status());
    if (samples.ok()) {
      s.have_metrics = true;
      s.sessions = SumMetricBy(*samples, "cachesvc_sessions", "state");
      s.sessions_source = "daemon";
      s.hits = SumMetric(*samples, "cachesvc_block_hits_total");
      s.misses = SumMetric(*samples, "cachesvc_block_misses_total");
      s.load_bytes = SumMetric(*samples, "cachesvc_dataplane_bytes_total", {{"direction", "load"}});
      s.save_bytes = SumMetric(*samples, "cachesvc_dataplane_bytes_total", {{"direction", "save"}});
      s.leases_read = SumMetric(*samples, "cachesvc_leases_outstanding", {{"kind", "read"}});
      s.leases_write = SumMetric(*samples, "cachesvc_leases_outstanding", {{"kind", "write"}});
      s.rpc_by_method = SumMetricBy(*samples, "cachesvc_rpc_requests_total", "method");
    } else {
      s.metrics_error = std::string{samples.status().message()};
    }
  }
  if (!s.have_metrics) {
    // Without /metrics: the caller's tenant's sessions, counted by state.
    auto sessions = client.ListAllSessions(v1::SESSION_STATE_UNSPECIFIED, 100000);
    if (sessions.ok()) {
      for (const char* state : {"running", "waiting_tool", "idle", "closed"}) s.sessions[state] = 0;
      for (const auto& info : *sessions) s.sessions[StateName(info.state())] += 1;
      s.sessions_source = "tenant";
    } else {
      s.sessions_error = fmt::format("{} ({})", std::string{sessions.status().message()},
                                     absl::StatusCodeToString(sessions.status().code()));
    }
  }
  return s;
}

double Seconds(const Sample& from, const Sample& to) {
  return std::chrono::duration<double>(to.at - from.at).count();
}

// Per-second change of a counter, or nullopt without a usable previous sample.
std::optional<double> Rate(const Sample* prev, const Sample& cur, double before, double now) {
  if (prev == nullptr || !prev->error.ok()) return std::nullopt;
  const double dt = Seconds(*prev, cur);
  if (dt <= 0) return std::nullopt;
  return std::max(0.0, now - before) / dt;
}

const v1::TierStats* FindTier(const Sample& s, const std::string& name) {
  for (const auto& t : s.tiers.tiers()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

std::string Percent(double part, double whole) {
  return whole <= 0 ? std::string("-") : fmt::format("{:.1f}%", 100.0 * part / whole);
}

std::string Bar(double fraction, int width) {
  const int full = std::clamp(static_cast<int>(std::lround(fraction * width)), 0, width);
  return "[" + std::string(static_cast<std::size_t>(full), '#') +
         std::string(static_cast<std::size_t>(width - full), '.') + "]";
}

std::string RateText(const std::optional<double>& bytes_per_s) {
  return bytes_per_s ? Bytes(static_cast<std::uint64_t>(*bytes_per_s)) + "/s" : "-";
}

// `keys`: whether q is read from the terminal (then the header says so).
std::string RenderText(const Globals& g, const TopArgs& args, bool keys, const Sample* prev,
                       const Sample& cur) {
  std::ostringstream out;
  const std::string clock =
      absl::FormatTime("%H:%M:%S", absl::FromUnixMillis(cur.unix_ms), absl::LocalTimeZone());
  if (!cur.error.ok()) {
    out << "cachectl top  " << g.address << "  " << clock << "\n\n"
        << "cannot read the daemon: " << cur.error.message() << " ("
        << absl::StatusCodeToString(cur.error.code()) << "); retrying every "
        << Millis(args.interval_ms) << "\n";
    return out.str();
  }
  const auto& st = cur.status;
  out << "cachectl top  " << g.address << "  cachesvc " << st.version() << "  up "
      << Millis(cur.unix_ms - st.started_unix_ms()) << "  "
      << (st.draining() ? "DRAINING" : "serving") << "  " << clock << "  every "
      << Millis(args.interval_ms) << (keys ? "  (q quits)" : "") << "\n\n";

  out << "sessions  ";
  if (!cur.sessions_error.empty()) {
    out << "unavailable: " << cur.sessions_error;
  } else {
    for (const char* state : {"running", "waiting_tool", "idle", "closed"}) {
      auto it = cur.sessions.find(state);
      out << fmt::format("{} {:.0f}  ", state, it == cur.sessions.end() ? 0.0 : it->second);
    }
    out << (cur.sessions_source == "daemon" ? "(all tenants)" : "(this token's tenant)");
  }
  out << "\n";
  out << fmt::format("blocks    {} indexed   leases {}", st.blocks_indexed(),
                     st.leases_outstanding());
  if (cur.have_metrics) {
    out << fmt::format(" (read {:.0f}, write {:.0f})", cur.leases_read, cur.leases_write);
  }
  out << "\n";
  if (cur.have_metrics) {
    std::string window = "-";
    if (prev != nullptr && prev->have_metrics) {
      window =
          Percent(cur.hits - prev->hits, (cur.hits - prev->hits) + (cur.misses - prev->misses));
    }
    out << fmt::format("hits      {:.0f}  misses {:.0f}  hit rate {} overall, {} last interval\n",
                       cur.hits, cur.misses, Percent(cur.hits, cur.hits + cur.misses), window);
    const Sample* p = prev != nullptr && prev->have_metrics ? prev : nullptr;
    out << "transfer  load " << RateText(Rate(p, cur, p ? p->load_bytes : 0, cur.load_bytes))
        << "  save " << RateText(Rate(p, cur, p ? p->save_bytes : 0, cur.save_bytes)) << "\n";
  } else if (!cur.metrics_error.empty()) {
    out << "metrics   unavailable: " << cur.metrics_error << "\n";
  } else {
    out << "metrics   give --metrics HOST:PORT (the daemon's metrics_listen) for hit and "
           "request rates\n";
  }
  out << "\n";

  Table tiers({{"TIER"},
               {"KIND"},
               {"USE"},
               {"USED", true},
               {"CAPACITY", true},
               {"USE%", true},
               {"BLOCKS", true},
               {"LEASES", true},
               {"READ/s", true},
               {"WRITE/s", true}});
  for (const auto& t : cur.tiers.tiers()) {
    const double fraction = t.capacity_bytes() == 0 ? 0.0
                                                    : static_cast<double>(t.used_bytes()) /
                                                          static_cast<double>(t.capacity_bytes());
    const v1::TierStats* before = prev != nullptr ? FindTier(*prev, t.name()) : nullptr;
    const Sample* p = before != nullptr ? prev : nullptr;
    tiers.AddRow({t.name(), TierName(t.kind()), Bar(fraction, 20), Bytes(t.used_bytes()),
                  Bytes(t.capacity_bytes()), fmt::format("{:.1f}", 100 * fraction),
                  std::to_string(t.blocks()), std::to_string(t.leases_active()),
                  RateText(Rate(p, cur, before ? static_cast<double>(before->read_bytes()) : 0,
                                static_cast<double>(t.read_bytes()))),
                  RateText(Rate(p, cur, before ? static_cast<double>(before->written_bytes()) : 0,
                                static_cast<double>(t.written_bytes())))});
  }
  if (tiers.rows() == 0) {
    out << "no tiers\n";
  } else {
    tiers.Print(out);
  }

  if (cur.have_metrics) {
    out << "\n";
    Table rpcs({{"METHOD"}, {"TOTAL", true}, {"PER SEC", true}});
    std::vector<std::pair<double, std::string>> order;
    for (const auto& [method, total] : cur.rpc_by_method) order.emplace_back(-total, method);
    std::sort(order.begin(), order.end());
    const Sample* p = prev != nullptr && prev->have_metrics ? prev : nullptr;
    for (const auto& [neg_total, method] : order) {
      double before = 0;
      if (p != nullptr) {
        auto it = p->rpc_by_method.find(method);
        before = it == p->rpc_by_method.end() ? 0 : it->second;
      }
      auto rate = Rate(p, cur, before, -neg_total);
      rpcs.AddRow(
          {method, fmt::format("{:.0f}", -neg_total), rate ? fmt::format("{:.1f}", *rate) : "-"});
    }
    if (rpcs.rows() > 0) rpcs.Print(out);
  }
  return out.str();
}

nlohmann::json RenderJson(const Globals& g, const Sample* prev, const Sample& cur) {
  nlohmann::json out{{"address", g.address}, {"time_unix_ms", cur.unix_ms}};
  if (!cur.error.ok()) {
    out["error"] = {{"code", absl::StatusCodeToString(cur.error.code())},
                    {"message", std::string{cur.error.message()}}};
    return out;
  }
  out["version"] = cur.status.version();
  out["draining"] = cur.status.draining();
  out["blocks_indexed"] = cur.status.blocks_indexed();
  out["leases_outstanding"] = cur.status.leases_outstanding();
  nlohmann::json tiers = nlohmann::json::array();
  for (const auto& t : cur.tiers.tiers()) {
    nlohmann::json j = ToJson(t);
    const v1::TierStats* before = prev != nullptr ? FindTier(*prev, t.name()) : nullptr;
    const Sample* p = before != nullptr ? prev : nullptr;
    auto rd = Rate(p, cur, before ? static_cast<double>(before->read_bytes()) : 0,
                   static_cast<double>(t.read_bytes()));
    auto wr = Rate(p, cur, before ? static_cast<double>(before->written_bytes()) : 0,
                   static_cast<double>(t.written_bytes()));
    j["read_bytes_per_s"] = rd ? nlohmann::json(*rd) : nlohmann::json();
    j["written_bytes_per_s"] = wr ? nlohmann::json(*wr) : nlohmann::json();
    tiers.push_back(std::move(j));
  }
  out["tiers"] = std::move(tiers);
  // Counts are whole numbers even where /metrics writes them as floats.
  auto count = [](double v) { return static_cast<std::uint64_t>(std::max(0.0, v)); };
  if (cur.sessions_error.empty()) {
    nlohmann::json sessions = nlohmann::json::object();
    for (const auto& [state, n] : cur.sessions) sessions[state] = count(n);
    out["sessions"] = std::move(sessions);
    out["sessions_scope"] = cur.sessions_source;
  } else {
    out["sessions_error"] = cur.sessions_error;
  }
  if (cur.have_metrics) {
    const Sample* p = prev != nullptr && prev->have_metrics ? prev : nullptr;
    out["hits"] = count(cur.hits);
    out["misses"] = count(cur.misses);
    out["leases"] = {{"read", count(cur.leases_read)}, {"write", count(cur.leases_write)}};
    nlohmann::json rpc = nlohmann::json::object();
    for (const auto& [method, total] : cur.rpc_by_method) {
      double before = 0;
      if (p != nullptr) {
        auto it = p->rpc_by_method.find(method);
        before = it == p->rpc_by_method.end() ? 0 : it->second;
      }
      auto rate = Rate(p, cur, before, total);
      rpc[method] = {{"total", count(total)},
                     {"per_s", rate ? nlohmann::json(*rate) : nlohmann::json()}};
    }
    out["rpc"] = std::move(rpc);
  } else if (!cur.metrics_error.empty()) {
    out["metrics_error"] = cur.metrics_error;
  }
  return out;
}

// Puts a terminal stdin in single-key mode for q, and restores it.
class KeyReader {
 public:
  KeyReader() {
    if (::isatty(STDIN_FILENO) != 1 || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~KeyReader() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  KeyReader(const KeyReader&) = delete;
  KeyReader& operator=(const KeyReader&) = delete;

  bool active() const { return active_; }

  // Waits up to `ms`; true when q was pressed or a signal asked to stop.
  bool WaitForQuit(int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (g_stop == 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            end - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      pollfd fd{STDIN_FILENO, POLLIN, 0};
      const int ready = ::poll(active_ ? &fd : nullptr, active_ ? 1 : 0,
                               static_cast<int>(std::min<long long>(left, 200)));
      if (ready > 0 && active_) {
        char c = 0;
        if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) return true;
      }
    }
    return true;
  }

 private:
  termios saved_{};
  bool active_ = false;
};

}  // namespace

int Top(const Globals& g, const TopArgs& args) {
  const int frames = args.once ? 1 : args.iterations;  // 0: until stopped
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  const bool in_place = !g.json && (args.ansi || (tty && frames != 1));
  // The alternate screen only for an open-ended view, so a bounded run leaves its last frame.
  const bool alternate = in_place && tty && frames == 0;

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);

  client::AdminClient client = NewClient(g);
  std::optional<Sample> prev;
  KeyReader keys;
  if (alternate) std::cout << "\x1b[?1049h";
  if (in_place) std::cout << "\x1b[?25l\x1b[2J";
  absl::Status last;
  for (int frame = 0; frames == 0 || frame < frames; ++frame) {
    Sample cur = Take(client, g);
    last = cur.error;
    // Nothing to show yet: a daemon that cannot be read at the start is an error, not a view.
    if (frame == 0 && !cur.error.ok()) break;
    if (g.json) {
      PrintJson(RenderJson(g, prev ? &*prev : nullptr, cur));
    } else {
      std::string text =
          RenderText(g, args, keys.active() && frames != 1, prev ? &*prev : nullptr, cur);
      if (in_place) {
        // Each line cleared to its end, then the rest of the screen: no flicker, no leftovers.
        std::string framed = "\x1b[H";
        std::size_t start = 0;
        for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
          framed += text.substr(start, nl - start) + "\x1b[K\n";
        }
        framed += "\x1b[J";
        std::cout << framed;
      } else {
        if (frame > 0) std::cout << "\n";
        std::cout << text;
      }
    }
    std::cout << std::flush;
    prev = std::move(cur);
    if (frames != 0 && frame + 1 >= frames) break;
    if (keys.WaitForQuit(args.interval_ms)) break;
  }
  if (in_place) std::cout << "\x1b[?25h";
  if (alternate) std::cout << "\x1b[?1049l";
  std::cout << std::flush;
  if (!last.ok()) return ReportError(g, last);
  return kExitOk;
}

}  // namespace cachesvc::cachectl
