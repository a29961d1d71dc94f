#include "cachesvc/server.h"

#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <sstream>

#include "base/errno_message.h"
#include "cachesvc/block_service.h"
#include "cachesvc/block_store.h"
#include "cachesvc/layouts.h"
#include "cachesvc/local_dataplane.h"
#include "cachesvc/metrics.h"
#include "cachesvc/metrics_http.h"
#include "cachesvc/server_metrics.h"
#include "cachesvc/session_ops.h"
#include "cachesvc/session_service.h"
#include "cachesvc/session_store.h"
#include "cachesvc/tenants.h"
#include "cachesvc/ucx_dataplane.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc {

// gRPC reports a failed bind only through its own log; binding the address once ourselves first
// turns the common cases (port in use, address not on this host) into an exact message.
absl::Status ProbeListenAddress(const std::string& address) {
  if (address.starts_with("unix:")) return absl::OkStatus();
  const auto colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return absl::UnavailableError(fmt::format("cannot listen on {}: cannot resolve '{}': {}",
                                              address, host, gai_strerror(rc)));
  }
  absl::Status status = absl::OkStatus();
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      status = absl::UnavailableError(
          fmt::format("cannot listen on {}: {}", address, ErrnoMessage(errno)));
    }
    ::close(fd);
    break;  // gRPC binds the first usable address too
  }
  freeaddrinfo(found);
  return status;
}

namespace {

void LogGrpcLine(gpr_log_func_args* args) {
  switch (args->severity) {
    case GPR_LOG_SEVERITY_ERROR:
      spdlog::warn("grpc: {} ({}:{})", args->message, args->file, args->line);
      break;
    case GPR_LOG_SEVERITY_INFO:
      spdlog::debug("grpc: {}", args->message);
      break;
    default:
      spdlog::trace("grpc: {}", args->message);
      break;
  }
}

}  // namespace

void RouteGrpcLogging() { gpr_set_log_function(LogGrpcLine); }

namespace {

[[nodiscard]] absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(fmt::format("cannot read {}", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const Config& config, DaemonInfo info,
                                                      TierSet* tiers,
                                                      const std::filesystem::path& data_dir,
                                                      Env* env) {
  if (absl::Status s = ProbeListenAddress(config.listen); !s.ok()) return s;
  std::unique_ptr<Server> self(new Server());
  self->env_ = env;
  self->keep_volatile_on_exit_ = config.keep_volatile_on_exit;

  auto tenants = TenantRegistry::Open(config.tenants, data_dir);
  if (!tenants.ok()) return tenants.status();
  self->tenants_ = std::move(*tenants);
  self->metrics_ = std::make_unique<metrics::Registry>();
  if (tiers != nullptr && !tiers->tiers().empty()) {
    PlacementPolicy placement;
    placement.name = config.policy;
    placement.prefetch_lead = std::chrono::milliseconds(config.prefetch_lead_ms);
    placement.lease_timeout = std::chrono::milliseconds(config.lease_timeout_ms);
    auto store = BlockStore::Open(tiers->tiers(), placement, env);
    if (!store.ok()) return store.status();
    self->store_ = std::move(*store);
  }
  if (self->store_ != nullptr && !config.ucx_listen.empty()) {
    UcxOptions ucx;
    ucx.listen_address = config.ucx_listen;
    ucx.transports = config.ucx_transports;
    ucx.detect_peer_failure = config.ucx_detect_peer_failure;
    auto plane = UcxDataPlane::Start(ucx);
    if (!plane.ok()) {
      return absl::UnavailableError(fmt::format("ucx_listen {}: {}", config.ucx_listen,
                                                std::string(plane.status().message())));
    }
    self->ucx_ = std::move(*plane);
    self->ucx_->SetHandler(self->store_.get());
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto session_store = SessionStore::Open(data_dir / "sessions");
  if (!session_store.ok()) return session_store.status();
  self->session_store_ = std::move(*session_store);
  RegisterMetrics(*self->metrics_, tiers, self->store_.get(), self->tenants_.get(),
                  self->session_store_.get());
  if (!config.metrics_listen.empty()) {
    self->exporter_ =
        std::make_unique<metrics::HttpExporter>(self->metrics_.get(), config.metrics_listen);
    if (absl::Status s = self->exporter_->Start(); !s.ok()) {
      return absl::UnavailableError(fmt::format("metrics_listen: {}", std::string(s.message())));
    }
  }

  self->layouts_ = std::make_unique<KnownLayouts>();
  self->session_ops_ = std::make_unique<SessionOps>(self->session_store_.get(), self->store_.get(),
                                                    self->layouts_.get(), env);
  if (const std::size_t n = self->session_ops_->RestoreBlockState(*self->tenants_); n > 0) {
    spdlog::info("told the block store about {} open sessions", n);
  }
  self->admin_ = std::make_unique<AdminServiceImpl>(
      std::move(info), tiers,
      AdminBackends{self->tenants_.get(), self->session_ops_.get(), self->store_.get(),
                    self->metrics_.get()});
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!config.tls_cert_path.empty()) {
    auto cert = ReadFile(config.tls_cert_path);
    if (!cert.ok()) return cert.status();
    auto key = ReadFile(config.tls_key_path);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(config.listen, credentials, &selected_port);
  // gRPC sets SO_REUSEPORT by default, which would let a second daemon bind the same port and
  // silently split the traffic. One address, one daemon.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  builder.RegisterService(self->admin_.get());
  if (self->store_ != nullptr) {
    self->blocks_ = std::make_unique<BlockServiceImpl>(
        self->store_.get(), self->tenants_.get(),
        self->ucx_ != nullptr ? self->ucx_->address() : std::string(), config.local_socket,
        self->metrics_.get(), self->layouts_.get(), self->session_ops_.get());
    builder.RegisterService(self->blocks_.get());
    if (!config.local_socket.empty()) {
      if (absl::Status s = self->StartLocalDataPlane(
              LocalOptions{.socket_path = config.local_socket,
                           .busy_poll = std::chrono::microseconds(config.local_busy_poll_us)},
              tiers);
          !s.ok()) {
        return s;
      }
    }
  }
  self->sessions_ = std::make_unique<SessionServiceImpl>(
      self->session_ops_.get(), self->tenants_.get(), self->metrics_.get());
  builder.RegisterService(self->sessions_.get());
  self->server_ = builder.BuildAndStart();
  if (self->server_ == nullptr || selected_port == 0) {
    return absl::UnavailableError(fmt::format(
        "cannot listen on {} (gRPC refused the address; see its log line)", config.listen));
  }
  self->address_ = config.listen;
  if (!self->address_.starts_with("unix:")) {
    self->address_ =
        fmt::format("{}:{}", self->address_.substr(0, self->address_.rfind(':')), selected_port);
  }
  if (self->store_ != nullptr) {
    self->reaper_ = env->StartThread("cachesvc-reaper", [s = self.get()] { s->ReapLeases(); });
  }
  return self;
}

absl::Status Server::StartLocalDataPlane(const LocalOptions& options, TierSet* tiers) {
  const tiers::HostTier* host = tiers != nullptr ? tiers->host() : nullptr;
  if (host == nullptr || host->shared_fd() < 0) {
    return absl::InvalidArgumentError(
        "local_socket needs a host tier (tiers.host.capacity_bytes > 0): it shares host memory");
  }
  LocalEngineResolver resolver = [blocks = blocks_.get(), tenants = tenants_.get()](
                                     std::string_view id) -> absl::StatusOr<LocalEngine> {
    auto engine = blocks->EngineById(id);
    if (!engine.ok()) return engine.status();
    const Tenant* t = tenants->Find(engine->tenant);
    if (t == nullptr) return absl::NotFoundError(fmt::format("engine '{}' is not registered", id));
    return LocalEngine{engine->tenant, std::string(t->salt()), engine->fingerprint,
                       engine->layout.block_tokens};
  };
  auto plane = LocalDataPlane::Start(
      options,
      LocalArena{.fd = host->shared_fd(), .base = host->arena(), .bytes = host->arena_bytes()},
      store_.get(), std::move(resolver), metrics_.get());
  if (!plane.ok()) return plane.status();
  local_ = std::move(*plane);
  return absl::OkStatus();
}

void Server::ReapLeases() {
  auto next_expiry = env_->Now();
  for (;;) {
    {
      // Prefetches are due to the millisecond scale of tool calls; lease expiry is coarser.
      MutexLock lock(&reaper_mu_);
      reaper_cv_.WaitFor(&reaper_mu_, std::chrono::milliseconds(50),
                         [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(reaper_mu_) { return stopping_; });
      if (stopping_) return;
    }
    if (std::size_t n = store_->Prefetch(); n > 0) {
      spdlog::debug("staged {} blocks of sessions due back", n);
    }
    if (env_->Now() >= next_expiry) {
      if (std::size_t n = store_->ExpireLeases(); n > 0) spdlog::info("{} leases timed out", n);
      next_expiry = env_->Now() + std::chrono::seconds(1);
    }
  }
}

std::string Server::ucx_address() const { return ucx_ != nullptr ? ucx_->address() : ""; }
std::string Server::metrics_address() const {
  return exporter_ != nullptr ? exporter_->address() : "";
}

absl::StatusOr<std::string> Server::Reload(const Config& config) {
  std::string changes;
  if (absl::Status s = tenants_->Reload(config.tenants, &changes); !s.ok()) return s;
  return changes;
}

Server::~Server() { Shutdown(std::chrono::milliseconds(0)); }

void Server::Shutdown(std::chrono::milliseconds drain_timeout) {
  if (shut_down_) return;
  shut_down_ = true;
  // A start that failed part way leaves some of these unset; stop what there is.
  if (admin_ != nullptr) admin_->SetDraining();
  // No new local leases; closing the connections ends theirs (engines keep their copies).
  local_.reset();
  if (server_ != nullptr) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();  // NOT_SERVING
    server_->Shutdown(std::chrono::system_clock::now() + drain_timeout);
    server_->Wait();
  }
  {
    MutexLock lock(&reaper_mu_);
    stopping_ = true;
  }
  reaper_cv_.SignalAll();
  if (reaper_.joinable()) reaper_.join();
  if (ucx_ != nullptr) {
    ucx_->SetHandler(nullptr);
    ucx_.reset();  // transfers in flight end (their End* reach the store) before this returns
  }
  if (store_ != nullptr && keep_volatile_on_exit_) {
    const std::size_t n = store_->FlushToNvme();
    if (n > 0) spdlog::info("wrote {} host-only blocks to NVMe before exit", n);
  }
  if (exporter_ != nullptr) exporter_->Stop();
}

}  // namespace cachesvc
