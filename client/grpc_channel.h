// client/grpc_channel.h: the channel every client of the daemon opens: plain, or TLS trusting
// `tls_root_pem` (with `tls_server_name` overriding the name checked in the certificate), and
// replies of up to 64 MiB (a session's context with its token ids can be large; the daemon caps
// what it sends).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace cachesvc::client {

inline std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                                  const std::string& tls_root_pem,
                                                  const std::string& tls_server_name) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (!tls_root_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls_root_pem;
    creds = grpc::SslCredentials(ssl);
    if (!tls_server_name.empty()) args.SetSslTargetNameOverride(tls_server_name);
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

}  // namespace cachesvc::client
