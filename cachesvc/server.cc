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
          fmt::format("cannot listen on {}: {}", address, std::strerror(errno)));
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

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const Config& config, DaemonInfo info,
                                                      const TierSet* tiers) {
  if (absl::Status s = ProbeListenAddress(config.listen); !s.ok()) return s;

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  auto admin = std::make_unique<AdminServiceImpl>(std::move(info), tiers);
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &selected_port);
  // gRPC sets SO_REUSEPORT by default, which would let a second daemon bind the same port and
  // silently split the traffic. One address, one daemon.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  builder.RegisterService(admin.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    return absl::UnavailableError(fmt::format(
        "cannot listen on {} (gRPC refused the address; see its log line)", config.listen));
  }
  std::string address = config.listen;
  if (!address.starts_with("unix:")) {
    address = fmt::format("{}:{}", address.substr(0, address.rfind(':')), selected_port);
  }
  return std::unique_ptr<Server>(
      new Server(std::move(admin), std::move(server), std::move(address)));
}

Server::Server(std::unique_ptr<AdminServiceImpl> admin, std::unique_ptr<grpc::Server> server,
               std::string address)
    : admin_(std::move(admin)), server_(std::move(server)), address_(std::move(address)) {}

Server::~Server() { Shutdown(std::chrono::milliseconds(0)); }

void Server::Shutdown(std::chrono::milliseconds drain_timeout) {
  if (shut_down_) return;
  shut_down_ = true;
  admin_->SetDraining();
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();  // NOT_SERVING
  server_->Shutdown(std::chrono::system_clock::now() + drain_timeout);
  server_->Wait();
}

}  // namespace cachesvc
