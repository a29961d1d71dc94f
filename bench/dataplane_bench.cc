// The daemon's data plane, measured per operation from a client process, next to the baselines
// an engine connector would otherwise use: single-core memcpy of the same block, and Redis
// GET/SET of a value of the same size. bench/run dataplane drives it (starts redis-server and the
// daemon, picks the sizes, threads and transports) and computes the ratios.
//
//   dataplane_bench --address HOST:PORT [--token T] [--redis PORT] --block-bytes N --threads T
//                   [--seconds S | --ops K] [--op save,load,lookup,redis_set,redis_get,memcpy]
//                   [--ucx-transports LIST] [--ucx-detect-peer-failure 0|1] [--shared-client]
//                   [--transport NAME] [--working-set-bytes W] [--save-budget-bytes B]
//                   [--daemon-pid P] [--redis-pid P] [--breakdown] [--verbose]
//   -> one JSON object per line and op: {"op":..,"block_bytes":N,"threads":T,"gbps":..,
//      "p50_us":..,"p99_us":..,"ops":..,"client_cpu_us_per_op":..,...}
//
// gbps: bytes moved by all threads / the longest thread's time. client_cpu_us_per_op: this
// process's CPU time (all threads) per op; server_cpu_us_per_op: the same for --daemon-pid or
// --redis-pid (from /proc, 10 ms ticks). On a machine shared with other work these say more than
// latencies do. --breakdown times save and load a second time step by step (the same RPCs and
// UCX calls BlockClient makes, issued one by one) and adds each step's median and mean.
//
// What one op is (timed from the caller's side, one op in flight per thread):
//   save      BlockClient::Save of one block: AllocateBlocks RPC, UCX write, CommitBlocks RPC
//             (the client hashes the payload; the daemon checks it). A fresh key per op; saves
//             stop at --save-budget-bytes in all so that every block lands in free host memory
//             (no eviction is measured).
//   load      BlockClient::Load of one block: LeaseBlocks RPC, UCX read (which ends the lease),
//             XXH3 check, of blocks saved beforehand (distinct keys per thread, --working-set-bytes
//             in all, cycled; the daemon must hold them in its host tier).
//   lookup    LookupPrefix of a 64-block chain that is cached (latency per RPC; gbps 0).
//   redis_set / redis_get
//             SET / GET of a value of N bytes on the thread's own connection to redis-server, one
//             request at a time (no pipelining), over --working-set-bytes of keys per run.
//   memcpy    memcpy of N bytes on one core, cycling over two buffers of --working-set-bytes
//             each (larger than the last-level cache). Always one thread.
// Each thread gets its own BlockClient (its own UCX connection; its gRPC channel object is its
// own too, but gRPC shares one HTTP/2 connection among channels with the same target and
// arguments) unless --shared-client, where all threads use one. Payload buffers cycle over
// --working-set-bytes / T per thread, so no op runs out of a warm cache.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "base/cli11.h"
#include "base/errno_message.h"
#include "client/block_client.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "proto/layout.h"
#include "proto/xxh3.h"

namespace cachesvc::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::BlockClient;
using client::BlockClientOptions;
using client::LocalTransport;

constexpr std::size_t kLookupChain = 64;
constexpr std::size_t kWarmupOps = 3;

struct Options {
  std::string address;
  std::string token;
  int redis_port = 0;
  std::uint64_t block_bytes = 2 << 20;
  unsigned threads = 1;
  double seconds = 2.0;
  std::uint64_t ops = 0;  // per thread; 0: run for `seconds`
  std::vector<std::string> op_list = {"memcpy", "redis_set", "redis_get", "save", "load", "lookup"};
  std::string ucx_transports;
  bool ucx_detect_peer_failure = true;
  bool shared_client = false;
  int daemon_pid = 0;      // when set: the daemon's CPU time per op goes into the rows
  int redis_pid = 0;       // the same for redis-server
  bool breakdown = false;  // also time save/load step by step (raw RPCs + UCX), same sequence
  bool verbose = false;    // the UCX endpoint's description on stderr
  std::string transport;   // label for the rows ("tcp", "sm", ...)
  std::uint64_t working_set_bytes = 256ull << 20;
  std::uint64_t save_budget_bytes = 512ull << 20;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "dataplane_bench: %s\n", what.c_str());
  std::fflush(nullptr);
  std::_Exit(1);  // from any thread, without running destructors under the others
}

std::string ErrnoText() { return cachesvc::ErrnoMessage(errno); }

// Buffers on 2 MiB boundaries with huge pages advised (like the daemon's arena), touched before
// timing.
struct Buffer {
  std::byte* data = nullptr;
  std::size_t bytes = 0;
  explicit Buffer(std::size_t n) : bytes(n) {
    const std::size_t rounded = (n + (1 << 21) - 1) >> 21 << 21;
    data = static_cast<std::byte*>(std::aligned_alloc(1 << 21, rounded));
    if (data == nullptr) Die("out of memory");
    (void)::madvise(data, rounded, MADV_HUGEPAGE);
    std::uint64_t x = reinterpret_cast<std::uintptr_t>(data) | 1;
    for (std::size_t i = 0; i + 8 <= n; i += 8) {  // xorshift: not compressible, not zero
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(data + i, &x, 8);
    }
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// A layout whose RAW block is `bytes`: fp16, 4 KV heads x 128 dims x 16 tokens x 2 (K, V) is
// 32 KiB per layer.
ModelLayout LayoutFor(std::uint64_t bytes) {
  constexpr std::uint64_t kPerLayer = std::uint64_t{2} * 16 * 4 * 128 * 2;
  if (bytes == 0 || bytes % kPerLayer != 0 || bytes / kPerLayer > ModelLayout::kMaxLayers) {
    Die(fmt::format("--block-bytes must be a multiple of {} up to {}", kPerLayer,
                    kPerLayer * ModelLayout::kMaxLayers));
  }
  ModelLayout l;
  l.model_id = "dataplane-bench";
  l.num_layers = static_cast<std::uint32_t>(bytes / kPerLayer);
  l.num_kv_heads = 4;
  l.head_dim = 128;
  l.dtype = Dtype::kFp16;
  l.block_tokens = 16;
  return l;
}

// Keys: [run nonce 8][kind 1][thread 1][counter 6], unique per run, thread and op.
BlockKey MakeKey(std::uint64_t nonce, std::uint8_t kind, unsigned thread, std::uint64_t n) {
  BlockKey k;
  std::memcpy(k.bytes.data(), &nonce, 8);
  k.bytes[8] = kind;
  k.bytes[9] = static_cast<std::uint8_t>(thread);
  for (int i = 0; i < 6; ++i) k.bytes[10 + i] = static_cast<std::uint8_t>(n >> (8 * i));
  return k;
}

// A minimal RESP client: one blocking TCP connection, one request at a time.
class Redis {
 public:
  explicit Redis(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) Die("socket");
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Die(fmt::format("connect to redis on port {}: {}", port, ErrnoText()));
    }
    rbuf_.resize(64 << 10);
  }
  ~Redis() {
    if (fd_ >= 0) ::close(fd_);
  }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  void Set(const std::string& key, const std::byte* value, std::size_t n) {
    const std::string head =
        fmt::format("*3\r\n$3\r\nSET\r\n${}\r\n{}\r\n${}\r\n", key.size(), key, n);
    static const char kCrlf[] = "\r\n";
    iovec iov[3] = {{const_cast<char*>(head.data()), head.size()},
                    {const_cast<std::byte*>(value), n},
                    {const_cast<char*>(kCrlf), 2}};
    WriteAll(iov, 3);
    const std::string line = ReadLine();
    if (line != "+OK") Die(fmt::format("redis SET answered '{}'", line));
  }

  // Reads the value into `out` (at least its size); returns its length.
  std::size_t Get(const std::string& key, std::byte* out, std::size_t capacity) {
    const std::string req = fmt::format("*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n", key.size(), key);
    iovec iov[1] = {{const_cast<char*>(req.data()), req.size()}};
    WriteAll(iov, 1);
    const std::string line = ReadLine();
    if (line.empty() || line[0] != '$') Die(fmt::format("redis GET answered '{}'", line));
    const long long n = std::stoll(line.substr(1));
    if (n < 0) Die(fmt::format("redis GET {}: no such key", key));
    if (static_cast<std::size_t>(n) > capacity) Die("redis GET: value larger than the buffer");
    ReadExact(out, static_cast<std::size_t>(n));
    char crlf[2];
    ReadExact(reinterpret_cast<std::byte*>(crlf), 2);
    return static_cast<std::size_t>(n);
  }

 private:
  void WriteAll(iovec* iov, int count) {
    while (count > 0) {
      const ssize_t w = ::writev(fd_, iov, count);
      if (w < 0) {
        if (errno == EINTR) continue;
        Die(fmt::format("redis write: {}", ErrnoText()));
      }
      auto left = static_cast<std::size_t>(w);
      while (count > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --count;
      }
      if (count > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
  }
  void Fill() {
    if (rpos_ == rlen_) rpos_ = rlen_ = 0;
    const ssize_t r = ::recv(fd_, rbuf_.data() + rlen_, rbuf_.size() - rlen_, 0);
    if (r <= 0) Die(fmt::format("redis read: {}", r == 0 ? "closed" : ErrnoText()));
    rlen_ += static_cast<std::size_t>(r);
  }
  std::string ReadLine() {
    for (;;) {
      const char* begin = rbuf_.data() + rpos_;
      const char* end = rbuf_.data() + rlen_;
      const char* cr = static_cast<const char*>(std::memchr(begin, '\r', end - begin));
      if (cr != nullptr && cr + 1 < end) {
        std::string line(begin, cr);
        rpos_ += line.size() + 2;
        return line;
      }
      if (rpos_ > 0) {  // keep the partial line at the front
        std::memmove(rbuf_.data(), begin, end - begin);
        rlen_ -= rpos_;
        rpos_ = 0;
      }
      if (rlen_ == rbuf_.size()) Die("redis: reply line too long");
      Fill();
    }
  }
  // Buffered bytes first, then straight from the socket into `out` (one kernel copy).
  void ReadExact(std::byte* out, std::size_t n) {
    const std::size_t have = std::min(n, rlen_ - rpos_);
    std::memcpy(out, rbuf_.data() + rpos_, have);
    rpos_ += have;
    std::size_t got = have;
    while (got < n) {
      if (n - got < 4096) {
        Fill();
        const std::size_t take = std::min(n - got, rlen_ - rpos_);
        std::memcpy(out + got, rbuf_.data() + rpos_, take);
        rpos_ += take;
        got += take;
        continue;
      }
      const ssize_t r = ::recv(fd_, out + got, n - got, 0);
      if (r <= 0) Die(fmt::format("redis read: {}", r == 0 ? "closed" : ErrnoText()));
      got += static_cast<std::size_t>(r);
    }
  }

  int fd_ = -1;
  std::vector<char> rbuf_;
  std::size_t rpos_ = 0;
  std::size_t rlen_ = 0;
};

// CPU seconds (user + system, all threads, live and exited) this process has used.
double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// The same for another process, from /proc/PID/stat (clock-tick resolution); -1 if unreadable.
double ProcessCpuSeconds(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  const std::size_t close = stat.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields;
  std::size_t pos = close + 2;
  while (pos < stat.size() && fields.size() < 13) {
    const std::size_t sp = std::min(stat.find(' ', pos), stat.size());
    fields.push_back(stat.substr(pos, sp - pos));
    pos = sp + 1;
  }
  if (fields.size() < 13) return -1;
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
}

// Per-thread latencies and bytes of one op kind.
struct ThreadResult {
  std::vector<double> us;
  std::uint64_t bytes = 0;
  double seconds = 0;
};

// Runs `op(thread, i)` on every thread, after a barrier, until the deadline or `ops_per_thread`
// (or until `op` returns false); `bytes_per_op` counted per op.
// `server_pid`: the process serving the op (daemon, redis-server; 0: none), whose CPU time per op
// is reported with this process's.
template <typename Op>
nlohmann::json Measure(const Options& o, const std::string& name, unsigned threads,
                       std::uint64_t bytes_per_op, std::uint64_t max_ops_per_thread, Op&& op,
                       int server_pid = 0) {
  const double client_cpu0 = SelfCpuSeconds();
  const double server_cpu0 = ProcessCpuSeconds(server_pid);
  std::vector<ThreadResult> results(threads);
  std::barrier start(static_cast<std::ptrdiff_t>(threads));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ThreadResult& r = results[t];
      r.us.reserve(1 << 16);
      start.arrive_and_wait();
      const auto t0 = Clock::now();
      const auto deadline = t0 + std::chrono::duration<double>(o.seconds);
      for (std::uint64_t i = 0; i < max_ops_per_thread; ++i) {
        const auto a = Clock::now();
        if (o.ops == 0 && a >= deadline) break;
        if (!op(t, i)) break;
        const auto b = Clock::now();
        r.us.push_back(std::chrono::duration<double, std::micro>(b - a).count());
        r.bytes += bytes_per_op;
      }
      r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    });
  }
  for (auto& th : pool) th.join();
  const double client_cpu = SelfCpuSeconds() - client_cpu0;
  const double server_cpu = server_cpu0 < 0 ? -1 : ProcessCpuSeconds(server_pid) - server_cpu0;
  std::vector<double> all;
  std::uint64_t bytes = 0;
  double wall = 0;
  for (const ThreadResult& r : results) {
    all.insert(all.end(), r.us.begin(), r.us.end());
    bytes += r.bytes;
    wall = std::max(wall, r.seconds);
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    if (all.empty()) return 0.0;
    const auto idx = static_cast<std::size_t>(std::lround(p * static_cast<double>(all.size() - 1)));
    return all[std::min(idx, all.size() - 1)];
  };
  double sum = 0;
  for (double v : all) sum += v;
  auto r2 = [](double v, double scale) { return std::round(v * scale) / scale; };
  nlohmann::json row = {
      {"op", name},
      {"block_bytes", o.block_bytes},
      {"threads", threads},
      {"gbps", wall > 0 ? r2(static_cast<double>(bytes) / wall / 1e9, 1000) : 0.0},
      {"p50_us", r2(pct(0.50), 10)},
      {"p99_us", r2(pct(0.99), 10)},
      {"mean_us", all.empty() ? 0.0 : r2(sum / static_cast<double>(all.size()), 10)},
      {"ops", all.size()},
      {"ops_per_s", wall > 0 ? r2(static_cast<double>(all.size()) / wall, 10) : 0.0},
      {"seconds", r2(wall, 1000)},
  };
  if (!all.empty()) {
    const auto n_ops = static_cast<double>(all.size());
    row["client_cpu_us_per_op"] = r2(client_cpu / n_ops * 1e6, 10);
    if (server_cpu >= 0) row["server_cpu_us_per_op"] = r2(server_cpu / n_ops * 1e6, 10);
  }
  return row;
}

// Per-thread step durations of the breakdown, by step name in a fixed order.
struct Steps {
  std::vector<std::string> names;
  std::vector<std::vector<std::vector<double>>> per_thread;  // [thread][step][sample]
  Steps(std::vector<std::string> n, unsigned threads)
      : names(std::move(n)), per_thread(threads, std::vector<std::vector<double>>(names.size())) {}
  // Appends the time since `last` to step `i` of thread `t` and moves `last` on.
  void Mark(unsigned t, std::size_t i, Clock::time_point& last) {
    const auto now = Clock::now();
    per_thread[t][i].push_back(std::chrono::duration<double, std::micro>(now - last).count());
    last = now;
  }
  // {"step": value} with the median (mean = false) or the mean of each step's times.
  nlohmann::json Summary(bool mean) const {
    nlohmann::json out = nlohmann::json::object();
    for (std::size_t i = 0; i < names.size(); ++i) {
      std::vector<double> all;
      for (const auto& t : per_thread) all.insert(all.end(), t[i].begin(), t[i].end());
      if (all.empty()) continue;
      double v = 0;
      if (mean) {
        for (double x : all) v += x;
        v /= static_cast<double>(all.size());
      } else {
        std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(all.size() / 2),
                         all.end());
        v = all[all.size() / 2];
      }
      out[names[i]] = std::round(v * 10) / 10;
    }
    return out;
  }
};

void Print(const nlohmann::json& row) {
  std::printf("%s\n", row.dump().c_str());
  std::fflush(stdout);
}

// The BlockClients the threads use, and the UCX lanes of the first one's endpoint.
struct Cachesvc {
  std::vector<std::unique_ptr<BlockClient>> clients;  // one, or one per thread
  std::string lanes;
  BlockClient& For(unsigned t) { return *clients[clients.size() == 1 ? 0 : t]; }
};

std::string Lanes(BlockClient& c) {
  // The first lines of ucp_ep_print_info name the lanes; keep the transport/device names.
  const std::string info = c.data_plane() != nullptr ? c.data_plane()->DescribeLanes() : "";
  std::string out;
  std::size_t pos = 0;
  while ((pos = info.find("lane[", pos)) != std::string::npos) {
    const std::size_t eol = info.find('\n', pos);
    std::string line = info.substr(pos, eol == std::string::npos ? eol : eol - pos);
    // "lane[1]:  0:tcp/lo.0 md[0]  -> md[0]/tcp/sysdev[255] am am_bw#0 wireup" -> "tcp/lo.0";
    // the connection manager's lane ("lane[0]: cm rdmacm") names no transport and is skipped.
    const std::size_t colon = line.find(':', line.find(']'));
    std::string tl;
    if (colon != std::string::npos) {
      std::size_t b = line.find_first_not_of(' ', colon + 1);
      b = line.find(':', b);
      if (b != std::string::npos) {
        const std::size_t e = line.find(' ', b);
        tl = line.substr(b + 1, e == std::string::npos ? e : e - b - 1);
      }
    }
    if (!tl.empty()) {
      if (!out.empty()) out += ";";
      out += tl;
    }
    pos = eol == std::string::npos ? info.size() : eol;
  }
  return out;
}

int Run(const Options& o) {
  const std::uint64_t n = o.block_bytes;
  const unsigned threads = std::max(1u, o.threads);
  auto wants = [&](const char* op) {
    return std::find(o.op_list.begin(), o.op_list.end(), op) != o.op_list.end();
  };
  const std::uint64_t unbounded = o.ops > 0 ? o.ops : ~std::uint64_t{0};
  // Per-thread buffers: the working set split over threads, at least 4 blocks each.
  const std::uint64_t per_thread_blocks =
      std::max<std::uint64_t>(4, o.working_set_bytes / threads / n);
  std::vector<std::unique_ptr<Buffer>> pools;
  auto pool_block = [&](unsigned t, std::uint64_t i) {
    return pools[t]->data + (i % per_thread_blocks) * n;
  };
  const bool need_pools =
      wants("save") || wants("load") || wants("lookup") || wants("redis_set") || wants("redis_get");
  if (need_pools) {
    for (unsigned t = 0; t < threads; ++t)
      pools.push_back(std::make_unique<Buffer>(per_thread_blocks * n));
  }
  nlohmann::json extra = {{"working_set_bytes", per_thread_blocks * n * threads}};
  if (!o.transport.empty()) extra["transport"] = o.transport;

  if (wants("memcpy")) {
    const std::uint64_t blocks = std::max<std::uint64_t>(4, o.working_set_bytes / n);
    Buffer src(blocks * n), dst(blocks * n);
    Options one = o;
    one.threads = 1;
    for (std::uint64_t i = 0; i < kWarmupOps; ++i) std::memcpy(dst.data, src.data, n);
    auto row = Measure(one, "memcpy", 1, n, unbounded, [&](unsigned, std::uint64_t i) {
      // Source and destination walk the working set out of step, so neither stays cached.
      std::memcpy(dst.data + (i % blocks) * n, src.data + ((i * 7 + 3) % blocks) * n, n);
      return true;
    });
    row["working_set_bytes"] = 2 * blocks * n;
    Print(row);
  }

  if (wants("redis_set") || wants("redis_get")) {
    if (o.redis_port == 0) Die("--redis PORT is needed for redis_set/redis_get");
    std::vector<std::unique_ptr<Redis>> conns;
    for (unsigned t = 0; t < threads; ++t) conns.push_back(std::make_unique<Redis>(o.redis_port));
    auto key = [&](unsigned t, std::uint64_t i) {
      return fmt::format("dp:{}:{}:{}", n, t, i % per_thread_blocks);
    };
    // Every key holds a value before anything is timed (and SET starts warm, like GET).
    for (unsigned t = 0; t < threads; ++t) {
      for (std::uint64_t i = 0; i < per_thread_blocks; ++i)
        conns[t]->Set(key(t, i), pool_block(t, i), n);
    }
    if (wants("redis_set")) {
      auto row = Measure(
          o, "redis_set", threads, n, unbounded,
          [&](unsigned t, std::uint64_t i) {
            conns[t]->Set(key(t, i), pool_block(t, i + 1), n);
            return true;
          },
          o.redis_pid);
      row.update(extra);
      Print(row);
    }
    if (wants("redis_get")) {
      auto row = Measure(
          o, "redis_get", threads, n, unbounded,
          [&](unsigned t, std::uint64_t i) {
            if (conns[t]->Get(key(t, i), pool_block(t, i), n) != n) Die("redis GET: short value");
            return true;
          },
          o.redis_pid);
      row.update(extra);
      Print(row);
    }
  }

  if (wants("save") || wants("load") || wants("lookup")) {
    if (o.address.empty()) Die("--address is needed for save/load/lookup");
    Cachesvc svc;
    const ModelLayout layout = LayoutFor(n);
    const unsigned nclients = o.shared_client ? 1 : threads;
    for (unsigned c = 0; c < nclients; ++c) {
      BlockClientOptions bo;
      bo.address = o.address;
      bo.token = o.token;
      bo.ucx_transports = o.ucx_transports;
      bo.ucx_detect_peer_failure = o.ucx_detect_peer_failure;
      auto client = BlockClient::Connect(bo);
      if (!client.ok()) Die(fmt::format("connect: {}", client.status().ToString()));
      auto engine = (*client)->RegisterEngine(layout);
      if (!engine.ok()) Die(fmt::format("RegisterEngine: {}", engine.status().ToString()));
      if (engine->raw_block_bytes != n) Die("the daemon disagrees about the block size");
      svc.clients.push_back(std::move(*client));
    }
    svc.lanes = Lanes(*svc.clients[0]);
    if (o.verbose)
      std::fprintf(stderr, "%s\n", svc.clients[0]->data_plane()->DescribeLanes().c_str());
    extra["client"] = o.shared_client ? "shared" : "per_thread";
    extra["lanes"] = svc.lanes;
    // Which path loads and lookups take: the same-host data plane when the daemon offers it.
    extra["path"] = svc.clients[0]->local_plane() != nullptr ? "local" : "ucx";
    if (!svc.clients[0]->local_status().ok()) {
      extra["local_refused"] = svc.clients[0]->local_status().ToString();
    }
    std::random_device rd;
    const std::uint64_t nonce = (std::uint64_t{rd()} << 32) ^ rd();

    auto save_one = [&](unsigned t, const BlockKey& key, const std::byte* payload) {
      std::span<const BlockKey> keys(&key, 1);
      const std::span<const std::byte> view(payload, n);
      auto saved = svc.For(t).Save(keys, std::span<const std::span<const std::byte>>(&view, 1));
      if (!saved.ok()) Die(fmt::format("Save: {}", saved.status().ToString()));
      if (*saved != 1) Die("Save: the block was not newly committed");
    };

    if (wants("save")) {
      const std::uint64_t budget_ops =
          std::max<std::uint64_t>(1, o.save_budget_bytes / n / threads);
      for (unsigned t = 0; t < threads; ++t) {
        for (std::uint64_t i = 0; i < kWarmupOps; ++i) {
          save_one(t, MakeKey(nonce, 9, t, i), pool_block(t, i));
        }
      }
      auto row = Measure(
          o, "save", threads, n, std::min(unbounded, budget_ops),
          [&](unsigned t, std::uint64_t i) {
            save_one(t, MakeKey(nonce, 1, t, i), pool_block(t, i));
            return true;
          },
          o.daemon_pid);
      row.update(extra);
      row["save_budget_bytes"] = o.save_budget_bytes;
      if (o.breakdown) {
        // BlockClient::Save's sequence, one step at a time.
        Steps steps({"allocate_rpc", "client_xxh3", "ucx_write", "commit_rpc"}, threads);
        auto total =
            Measure(o, "save_steps", threads, n, std::min(unbounded, budget_ops),
                    [&](unsigned t, std::uint64_t i) {
                      BlockClient& c = svc.For(t);
                      const BlockKey key = MakeKey(nonce, 4, t, i);
                      const std::byte* payload = pool_block(t, i);
                      auto last = Clock::now();
                      v1::AllocateBlocksRequest alloc;
                      alloc.set_engine_id(c.engine().engine_id);
                      alloc.set_codec(v1::CODEC_RAW);
                      alloc.add_keys()->set_key(std::string(key.Bytes()));
                      v1::AllocateBlocksResponse leases;
                      auto ctx = c.NewContext();
                      if (!c.stub().AllocateBlocks(ctx.get(), alloc, &leases).ok() ||
                          leases.leases_size() != 1) {
                        Die("AllocateBlocks failed");
                      }
                      steps.Mark(t, 0, last);
                      v1::CommitBlocksRequest commit;
                      auto* one = commit.add_commits();
                      one->set_lease_id(leases.leases(0).lease_id());
                      one->set_length(n);
                      one->set_checksum(XXH3_64bits(payload, n));
                      steps.Mark(t, 1, last);
                      if (auto st = c.data_plane()->Write(leases.leases(0).lease_id(), payload, n);
                          !st.ok()) {
                        Die(fmt::format("UCX write: {}", st.ToString()));
                      }
                      steps.Mark(t, 2, last);
                      v1::CommitBlocksResponse committed;
                      auto cctx = c.NewContext();
                      if (!c.stub().CommitBlocks(cctx.get(), commit, &committed).ok()) {
                        Die("CommitBlocks failed");
                      }
                      steps.Mark(t, 3, last);
                      return true;
                    });
        row["steps_p50_us"] = steps.Summary(false);
        row["steps_mean_us"] = steps.Summary(true);
        row["steps_total_p50_us"] = total["p50_us"];
        row["steps_total_mean_us"] = total["mean_us"];
      }
      Print(row);
    }

    // The blocks loads read (and lookups find): saved now, in batches, untimed.
    std::vector<std::vector<BlockKey>> load_keys(threads);
    if (wants("load") || wants("lookup")) {
      constexpr std::size_t kBatch = 16;
      for (unsigned t = 0; t < threads; ++t) {
        for (std::uint64_t i = 0; i < per_thread_blocks; ++i)
          load_keys[t].push_back(MakeKey(nonce, 2, t, i));
        for (std::uint64_t i = 0; i < per_thread_blocks; i += kBatch) {
          const std::uint64_t end = std::min<std::uint64_t>(per_thread_blocks, i + kBatch);
          std::vector<std::span<const std::byte>> views;
          for (std::uint64_t j = i; j < end; ++j) views.emplace_back(pool_block(t, j), n);
          auto saved =
              svc.For(t).Save(std::span<const BlockKey>(load_keys[t].data() + i, end - i), views);
          if (!saved.ok()) Die(fmt::format("Save (load set): {}", saved.status().ToString()));
        }
      }
    }

    if (wants("load")) {
      auto load_one = [&](unsigned t, std::uint64_t i) {
        const BlockKey& key = load_keys[t][i % per_thread_blocks];
        const std::span<std::byte> out(pool_block(t, i + 1), n);  // not where it came from
        auto loaded = svc.For(t).Load(std::span<const BlockKey>(&key, 1),
                                      std::span<const std::span<std::byte>>(&out, 1));
        if (!loaded.ok()) Die(fmt::format("Load: {}", loaded.status().ToString()));
        if (*loaded != 1)
          Die("Load: the block did not arrive whole (a miss or a checksum failure)");
        return true;
      };
      for (unsigned t = 0; t < threads; ++t) {
        for (std::uint64_t i = 0; i < kWarmupOps; ++i) load_one(t, i);
      }
      auto row = Measure(o, "load", threads, n, unbounded, load_one, o.daemon_pid);
      row.update(extra);
      if (o.breakdown && svc.clients[0]->local_plane() != nullptr) {
        // BlockClient::Load's sequence on the same-host data plane, one step at a time.
        Steps steps({"local_lease", "copy_xxh3", "local_release"}, threads);
        auto total =
            Measure(o, "load_steps", threads, n, unbounded, [&](unsigned t, std::uint64_t i) {
              LocalTransport& local = *svc.For(t).local_plane();
              const std::span<std::byte> out(pool_block(t, i + 1), n);
              auto last = Clock::now();
              auto leases =
                  local.Lease(std::span<const BlockKey>(&load_keys[t][i % per_thread_blocks], 1));
              if (!leases.ok() || leases->size() != 1) Die("local LEASE failed");
              steps.Mark(t, 0, last);
              if (auto st = local.Read((*leases)[0], out); !st.ok()) {
                Die(fmt::format("local read: {}", st.ToString()));
              }
              steps.Mark(t, 1, last);
              const std::uint64_t id = (*leases)[0].lease_id;
              local.Release(std::span<const std::uint64_t>(&id, 1));
              steps.Mark(t, 2, last);
              return true;
            });
        row["steps_p50_us"] = steps.Summary(false);
        row["steps_mean_us"] = steps.Summary(true);
        row["steps_total_p50_us"] = total["p50_us"];
        row["steps_total_mean_us"] = total["mean_us"];
      } else if (o.breakdown) {
        // BlockClient::Load's sequence, one step at a time.
        Steps steps({"lease_rpc", "ucx_read", "client_xxh3"}, threads);
        auto total =
            Measure(o, "load_steps", threads, n, unbounded, [&](unsigned t, std::uint64_t i) {
              BlockClient& c = svc.For(t);
              std::byte* out = pool_block(t, i + 1);
              auto last = Clock::now();
              v1::LeaseBlocksRequest req;
              req.set_engine_id(c.engine().engine_id);
              req.add_keys()->set_key(std::string(load_keys[t][i % per_thread_blocks].Bytes()));
              v1::LeaseBlocksResponse leases;
              auto ctx = c.NewContext();
              if (!c.stub().LeaseBlocks(ctx.get(), req, &leases).ok() ||
                  leases.leases_size() != 1) {
                Die("LeaseBlocks failed");
              }
              steps.Mark(t, 0, last);
              std::size_t got = 0;
              if (auto st = c.data_plane()->Read(leases.leases(0).lease_id(), out, n, &got);
                  !st.ok() || got != n) {
                Die(fmt::format("UCX read: {}", st.ToString()));
              }
              steps.Mark(t, 1, last);
              if (XXH3_64bits(out, n) != leases.leases(0).checksum()) Die("checksum mismatch");
              steps.Mark(t, 2, last);
              // The lease ended with the read (Lease.ends_after_read): nothing to release.
              if (!leases.leases(0).ends_after_read()) Die("the daemon kept the read lease");
              return true;
            });
        row["steps_p50_us"] = steps.Summary(false);
        row["steps_mean_us"] = steps.Summary(true);
        row["steps_total_p50_us"] = total["p50_us"];
        row["steps_total_mean_us"] = total["mean_us"];
      }
      Print(row);
    }

    if (wants("lookup")) {
      // One cached chain of 64 blocks: the load set's first 64 keys (topped up if smaller).
      std::vector<BlockKey> chain;
      for (unsigned t = 0; t < threads && chain.size() < kLookupChain; ++t) {
        for (const BlockKey& k : load_keys[t]) {
          if (chain.size() == kLookupChain) break;
          chain.push_back(k);
        }
      }
      for (std::uint64_t i = 0; chain.size() < kLookupChain; ++i) {
        const BlockKey k = MakeKey(nonce, 3, 0, i);
        save_one(0, k, pool_block(0, i));
        chain.push_back(k);
      }
      auto lookup_one = [&](unsigned t, std::uint64_t) {
        auto found = svc.For(t).LookupPrefix(chain);
        if (!found.ok()) Die(fmt::format("LookupPrefix: {}", found.status().ToString()));
        if (*found != kLookupChain) Die(fmt::format("LookupPrefix found {} of 64", *found));
        return true;
      };
      for (unsigned t = 0; t < threads; ++t) {
        for (std::uint64_t i = 0; i < kWarmupOps; ++i) lookup_one(t, i);
      }
      auto row = Measure(o, "lookup", threads, 0, unbounded, lookup_one, o.daemon_pid);
      row.update(extra);
      row["chain_blocks"] = kLookupChain;
      Print(row);
    }
  }
  return 0;
}

}  // namespace
}  // namespace cachesvc::bench

int main(int argc, char** argv) {
  cachesvc::bench::Options o;
  CLI::App app{"dataplane_bench: the daemon's data plane per op, against memcpy and Redis"};
  std::string ops;
  int detect = 1;
  app.add_option("--address", o.address, "gRPC address of a running cachesvc daemon");
  app.add_option("--token", o.token, "bearer token (empty in the daemon's open mode)");
  app.add_option("--redis", o.redis_port, "port of a redis-server on 127.0.0.1");
  app.add_option("--block-bytes", o.block_bytes, "block (and value) size in bytes");
  app.add_option("--threads", o.threads, "client threads, one op in flight each");
  app.add_option("--seconds", o.seconds, "seconds per op kind");
  app.add_option("--ops", o.ops, "ops per thread instead of --seconds");
  app.add_option("--op", ops, "comma-separated: memcpy,redis_set,redis_get,save,load,lookup");
  app.add_option("--ucx-transports", o.ucx_transports, "UCX_TLS for the client (\"\": default)");
  app.add_option("--ucx-detect-peer-failure", detect, "1 or 0 (must match the daemon)");
  app.add_flag("--shared-client", o.shared_client, "one BlockClient shared by all threads");
  app.add_option("--daemon-pid", o.daemon_pid, "daemon's pid: report its CPU time per op");
  app.add_option("--redis-pid", o.redis_pid, "redis-server's pid: report its CPU time per op");
  app.add_flag("--breakdown", o.breakdown,
               "add steps_p50_us to save/load rows: each RPC, the UCX transfer and the checksum "
               "timed apart (a second measurement of the same sequence)");
  app.add_flag("--verbose", o.verbose, "print the UCX endpoint's lanes on stderr");
  app.add_option("--transport", o.transport, "label for the rows' transport field");
  app.add_option("--working-set-bytes", o.working_set_bytes, "bytes of blocks/values cycled over");
  app.add_option("--save-budget-bytes", o.save_budget_bytes, "bytes saved at most by the save op");
  CLI11_PARSE(app, argc, argv);
  o.ucx_detect_peer_failure = detect != 0;
  if (!ops.empty()) {
    o.op_list.clear();
    std::size_t pos = 0;
    while (pos <= ops.size()) {
      const std::size_t comma = std::min(ops.find(',', pos), ops.size());
      o.op_list.push_back(ops.substr(pos, comma - pos));
      pos = comma + 1;
    }
  }
  return cachesvc::bench::Run(o);
}
