#include "cachesvc/local_dataplane.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <unordered_set>
#include <vector>

#include "base/errno_message.h"
#include "cachesvc/block_store.h"
#include "cachesvc/local_protocol.h"
#include "cachesvc/rpc_metrics.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc {
namespace {

std::string Errno() { return ErrnoMessage(errno); }

// The reply frame for an error.
std::string ErrorReply(const absl::Status& st) {
  return local::ReplyHeader(static_cast<std::uint32_t>(st.code()), std::string(st.message()))
      .Finish();
}

[[nodiscard]] absl::StatusOr<std::vector<BlockKey>> ParseKeys(local::Reader& r) {
  auto n = r.U32();
  if (!n) return absl::InvalidArgumentError("truncated request: no key count");
  if (*n > local::kMaxItems) {
    return absl::InvalidArgumentError(
        fmt::format("{} keys in one request; at most {}", *n, local::kMaxItems));
  }
  if (r.remaining() != static_cast<std::size_t>(*n) * local::kKeyBytes) {
    return absl::InvalidArgumentError(fmt::format("{} keys need {} bytes, the request has {}", *n,
                                                  *n * local::kKeyBytes, r.remaining()));
  }
  std::vector<BlockKey> keys;
  keys.reserve(*n);
  for (std::uint32_t i = 0; i < *n; ++i) {
    auto k = BlockKey::FromBytes(*r.Bytes(local::kKeyBytes));
    if (!k.ok()) return k.status();
    keys.push_back(*k);
  }
  return keys;
}

// The keys of the full blocks of the tokens in `r` (u32 n, n x u32), as LookupPrefix derives them.
[[nodiscard]] absl::StatusOr<std::vector<BlockKey>> DeriveKeys(const LocalEngine& engine,
                                                               local::Reader& r) {
  auto n = r.U32();
  if (!n) return absl::InvalidArgumentError("truncated request: no token count");
  if (r.remaining() != static_cast<std::size_t>(*n) * 4) {
    return absl::InvalidArgumentError(fmt::format("{} tokens need {} bytes, the request has {}", *n,
                                                  std::size_t{*n} * 4, r.remaining()));
  }
  if (engine.block_tokens == 0 || *n / engine.block_tokens > local::kMaxItems) {
    return absl::InvalidArgumentError(
        fmt::format("{} tokens make more than {} blocks", *n, local::kMaxItems));
  }
  std::vector<std::uint32_t> tokens(*n);
  for (std::uint32_t& t : tokens) t = *r.U32();
  return DeriveBlockKeys(KeyChainSeed(engine.salt, engine.fingerprint), tokens,
                         engine.block_tokens);
}

}  // namespace

struct LocalDataPlane::Connection {
  int fd = -1;
  std::uint32_t peer_uid = 0;
  std::string in;                            // bytes received, not yet a whole frame
  std::optional<LocalEngine> engine;         // set by HELLO
  std::unordered_set<std::uint64_t> leases;  // live leases granted on this connection
};

absl::StatusOr<std::unique_ptr<LocalDataPlane>> LocalDataPlane::Start(const LocalOptions& options,
                                                                      const LocalArena& arena,
                                                                      BlockStore* store,
                                                                      LocalEngineResolver resolver,
                                                                      metrics::Registry* metrics) {
  if (options.socket_path.empty()) return absl::InvalidArgumentError("local_socket: empty path");
  if (options.socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(fmt::format(
        "local_socket '{}': {} bytes; a Unix socket path holds at most {}", options.socket_path,
        options.socket_path.size(), sizeof(sockaddr_un{}.sun_path) - 1));
  }
  if (arena.fd < 0 || arena.base == nullptr || arena.bytes == 0 || store == nullptr || !resolver) {
    return absl::InvalidArgumentError("local data plane: no shared host arena");
  }
  std::unique_ptr<LocalDataPlane> self(
      new LocalDataPlane(options, arena, store, std::move(resolver), metrics));
  if (absl::Status st = self->Init(); !st.ok()) return st;
  self->thread_ = std::thread([p = self.get()] { p->Loop(); });
  spdlog::info("local data plane: socket {} ({} byte host arena shared)",
               self->options_.socket_path, arena.bytes);
  return self;
}

absl::Status LocalDataPlane::Init() {
  // A read-only descriptor of the arena: peers can map it for reading only.
  readonly_fd_ = ::open(fmt::format("/proc/self/fd/{}", arena_.fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (readonly_fd_ < 0) {
    return absl::UnavailableError(
        fmt::format("local data plane: reopening the arena read-only failed: {}", Errno()));
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return absl::UnavailableError(fmt::format("eventfd: {}", Errno()));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options_.socket_path.data(), options_.socket_path.size());
  // A socket file left by a daemon that died is replaced; one with a live listener is not.
  struct stat st {};
  if (::lstat(addr.sun_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::UnavailableError(fmt::format(
          "local_socket '{}' exists and is not a socket; not replacing it", options_.socket_path));
    }
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live =
        probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) {
      return absl::UnavailableError(fmt::format(
          "local_socket '{}': another process is listening there", options_.socket_path));
    }
    ::unlink(addr.sun_path);
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return absl::UnavailableError(fmt::format("socket: {}", Errno()));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(
        fmt::format("local_socket '{}': bind: {}", options_.socket_path, Errno()));
  }
  ::chmod(addr.sun_path, 0600);  // peers are checked by uid as well (HELLO)
  if (::listen(listen_fd_, 128) != 0) {
    return absl::UnavailableError(
        fmt::format("local_socket '{}': listen: {}", options_.socket_path, Errno()));
  }
  return absl::OkStatus();
}

LocalDataPlane::~LocalDataPlane() {
  stop_.store(true);
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(options_.socket_path.c_str());
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (readonly_fd_ >= 0) ::close(readonly_fd_);
}

void LocalDataPlane::Loop() {
  std::list<Connection> conns;
  std::vector<pollfd> fds;
  std::vector<std::list<Connection>::iterator> order;
  std::vector<char> buf(64 << 10);
  // With busy polling, requests keep the thread polling (without sleeping) until `busy_poll`
  // passes without one.
  auto poll_until = std::chrono::steady_clock::time_point::min();
  while (!stop_.load()) {
    fds.clear();
    order.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto it = conns.begin(); it != conns.end(); ++it) {
      fds.push_back({it->fd, POLLIN, 0});
      order.push_back(it);
    }
    int ready = 0;
    while (std::chrono::steady_clock::now() < poll_until &&
           (ready = ::poll(fds.data(), fds.size(), 0)) == 0) {
    }
    if (ready == 0 && ::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("local data plane: poll: {}", Errno());
      break;
    }
    if (options_.busy_poll.count() > 0) {
      poll_until = std::chrono::steady_clock::now() + options_.busy_poll;
    }
    if (fds[0].revents != 0) break;  // stop
    if ((fds[1].revents & POLLIN) != 0) {
      while (true) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) break;
        if (conns.size() >= options_.max_connections) {
          spdlog::warn("local data plane: {} connections open; refusing another", conns.size());
          ::close(fd);
          continue;
        }
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
          ::close(fd);
          continue;
        }
        // Replies are small; a peer that stops reading them for a second is dropped.
        timeval tv{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        Connection& c = conns.emplace_back();
        c.fd = fd;
        c.peer_uid = cred.uid;
        connections_.store(conns.size(), std::memory_order_relaxed);
      }
    }
    for (std::size_t i = 0; i < order.size(); ++i) {
      const short ev = fds[i + 2].revents;
      if (ev == 0) continue;
      Connection& c = *order[i];
      bool keep = (ev & POLLIN) != 0;
      while (keep) {
        const ssize_t n = ::recv(c.fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n > 0) {
          c.in.append(buf.data(), static_cast<std::size_t>(n));
          if (static_cast<std::size_t>(n) < buf.size()) break;
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        keep = false;  // closed by the peer, or an error
      }
      if (keep) keep = HandleFrames(c);
      if (!keep) {
        Close(c);
        conns.erase(order[i]);
        connections_.store(conns.size(), std::memory_order_relaxed);
      }
    }
  }
  for (Connection& c : conns) Close(c);
  connections_.store(0, std::memory_order_relaxed);
}

bool LocalDataPlane::HandleFrames(Connection& c) {
  std::size_t pos = 0;
  bool keep = true;
  while (keep && c.in.size() - pos >= 4) {
    local::Reader header(std::string_view(c.in).substr(pos, 4));
    const std::uint32_t length = *header.U32();
    if (length < 4 || length > local::kMaxBody) {
      // The stream cannot be resynchronized: answer, then close.
      (void)Send(c,
                 ErrorReply(absl::InvalidArgumentError(fmt::format(
                     "frame of {} bytes; a body is 4 to {} bytes", length, local::kMaxBody))),
                 false);
      return false;
    }
    if (c.in.size() - pos - 4 < length) break;
    bool send_fd = false;
    const std::string reply = Handle(c, std::string_view(c.in).substr(pos + 4, length), &send_fd);
    pos += 4 + static_cast<std::size_t>(length);
    if (!reply.empty()) keep = Send(c, reply, send_fd);
  }
  c.in.erase(0, pos);
  return keep;
}

std::string LocalDataPlane::Hello(Connection& c, local::Reader& r,
                                  std::chrono::steady_clock::time_point start, bool* send_fd) {
  auto version = r.U32();
  auto id_length = r.U32();
  absl::Status st;
  std::optional<std::string_view> id;
  if (!version || !id_length) {
    st = absl::InvalidArgumentError("HELLO: truncated");
  } else if (*version != local::kVersion) {
    st = absl::FailedPreconditionError(
        fmt::format("local protocol version {}; this daemon speaks {}", *version, local::kVersion));
  } else if (*id_length > 128 || r.remaining() != *id_length) {
    st = absl::InvalidArgumentError("HELLO: malformed engine id");
  } else if (c.peer_uid != ::geteuid() && c.peer_uid != 0) {
    st = absl::PermissionDeniedError(
        fmt::format("local data plane: uid {} is not the daemon's ({}); use the UCX data plane",
                    c.peer_uid, ::geteuid()));
  } else if (c.engine.has_value()) {
    st = absl::FailedPreconditionError("HELLO: already said");
  } else {
    id = r.Bytes(*id_length);
    auto engine = resolver_(*id);
    if (engine.ok()) {
      c.engine = std::move(*engine);
    } else {
      st = engine.status();
    }
  }
  Record("local.Hello", start, static_cast<std::uint32_t>(st.code()));
  if (!st.ok()) return ErrorReply(st);
  *send_fd = true;
  return local::ReplyHeader(0, "").U64(arena_.bytes).Finish();
}

void LocalDataPlane::Release(Connection& c, local::Reader& r,
                             std::chrono::steady_clock::time_point start) {
  auto n = r.U32();
  if (!n || *n > local::kMaxItems || r.remaining() != static_cast<std::size_t>(*n) * 8) {
    return;  // RELEASE has no reply; a malformed one releases nothing
  }
  std::vector<std::uint64_t> ids;
  for (std::uint32_t i = 0; i < *n; ++i) {
    const std::uint64_t id = *r.U64();
    if (c.leases.erase(id) > 0) ids.push_back(id);  // only this connection's own leases
  }
  if (c.engine.has_value() && !ids.empty()) (void)store_->Release(c.engine->tenant, ids);
  Record("local.Release", start, 0);
}

std::string LocalDataPlane::Handle(Connection& c, std::string_view body, bool* send_fd) {
  const auto start = std::chrono::steady_clock::now();
  local::Reader r(body);
  const std::uint32_t type = *r.U32();  // a body has at least 4 bytes (HandleFrames)
  if (type == local::kHello) return Hello(c, r, start, send_fd);
  if (type == local::kRelease) {
    Release(c, r, start);
    return "";
  }
  if (type != local::kLookup && type != local::kLease && type != local::kKeys) {
    return ErrorReply(
        absl::InvalidArgumentError(fmt::format("unknown local message type {}", type)));
  }
  const char* method = type == local::kLookup  ? "local.Lookup"
                       : type == local::kLease ? "local.Lease"
                                               : "local.Keys";
  if (!c.engine.has_value()) {
    Record(method, start, static_cast<std::uint32_t>(absl::StatusCode::kFailedPrecondition));
    return ErrorReply(absl::FailedPreconditionError("send HELLO with an engine id first"));
  }
  auto keys = type == local::kKeys ? DeriveKeys(*c.engine, r) : ParseKeys(r);
  if (!keys.ok()) {
    Record(method, start, static_cast<std::uint32_t>(keys.status().code()));
    return ErrorReply(keys.status());
  }
  if (type == local::kLookup || type == local::kKeys) {
    const auto places = store_->Lookup(c.engine->tenant, c.engine->salt, *keys);
    Record(method, start, 0);
    local::Writer w = local::ReplyHeader(0, "");
    w.U32(static_cast<std::uint32_t>(places.size()));
    if (type == local::kKeys) {
      w.U32(static_cast<std::uint32_t>(keys->size()));
      for (const BlockKey& k : *keys) w.Bytes(k.Bytes());
    }
    return w.Finish();
  }
  auto leases = store_->Lease(c.engine->tenant, c.engine->salt, *keys, /*one_read=*/false);
  if (!leases.ok()) {
    Record(method, start, static_cast<std::uint32_t>(leases.status().code()));
    return ErrorReply(leases.status());
  }
  const auto base = reinterpret_cast<std::uintptr_t>(arena_.base);
  std::vector<local::Lease> out;
  std::vector<std::uint64_t> outside;
  for (const ReadLease& l : *leases) {
    // Every read lease is on host memory, inside the arena; anything else ends the prefix.
    if (!outside.empty() || l.address < base || l.address - base + l.length > arena_.bytes) {
      outside.push_back(l.lease_id);
      continue;
    }
    out.push_back(local::Lease{.lease_id = l.lease_id,
                               .offset = l.address - base,
                               .length = l.length,
                               .checksum = l.checksum,
                               .layout_fingerprint = l.layout_fingerprint,
                               .codec = static_cast<std::uint32_t>(l.codec)});
    c.leases.insert(l.lease_id);
  }
  if (!outside.empty()) {
    spdlog::warn("local data plane: {} leased blocks outside the shared arena", outside.size());
    (void)store_->Release(c.engine->tenant, outside);
  }
  local::Writer w = local::ReplyHeader(0, "");
  w.U32(static_cast<std::uint32_t>(out.size()));
  for (const local::Lease& l : out) local::PutLease(w, l);
  Record(method, start, 0);
  return w.Finish();
}

bool LocalDataPlane::Send(Connection& c, const std::string& frame, bool send_fd) {
  std::size_t sent = 0;
  while (sent < frame.size()) {
    iovec iov{const_cast<char*>(frame.data() + sent), frame.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (send_fd && sent == 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &readonly_fd_, sizeof(int));
    }
    const ssize_t n = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;  // gone, or not reading its replies (SO_SNDTIMEO)
    }
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

void LocalDataPlane::Close(Connection& c) {
  if (c.engine.has_value() && !c.leases.empty()) {
    std::vector<std::uint64_t> ids(c.leases.begin(), c.leases.end());
    (void)store_->Release(c.engine->tenant, ids);  // some may have expired already
  }
  c.leases.clear();
  ::close(c.fd);
}

void LocalDataPlane::Record(const char* method, std::chrono::steady_clock::time_point start,
                            std::uint32_t code) {
  if (metrics_ == nullptr) return;
  // Looked up once per (method, code): a registry lookup per request cost more than the request.
  const auto key = std::make_pair(method, code);
  auto it = series_.find(key);
  if (it == series_.end()) {
    it = series_.emplace(key, RpcSeriesFor(*metrics_, method, static_cast<absl::StatusCode>(code)))
             .first;
  }
  RecordRpc(it->second, start);
}

}  // namespace cachesvc
