// cachesvc/block_service.h: cachesvc.v1.BlockService, what engine connectors call. Each handler
// authenticates the tenant, validates the request (layouts, key sizes, codecs, lengths) and
// delegates to the BlockStore (cachesvc/block_store.h); payload bytes move over the UCX data
// plane, never through gRPC.
//
// Engines: RegisterEngine validates the layout and returns an engine id bound to the tenant and
// the layout (the same id for every registration of that layout by that tenant); every other call
// names it (an engine id of another tenant is NOT_FOUND). The engine's blocks are RAW payloads of
// the layout's size, or TQ3/TQ4 encodings of them (FP16 and BF16 layouts with a head_dim the codec
// supports), and must be exactly that long.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "base/mutex.h"
#include "cachesvc/block_store.h"
#include "cachesvc/layouts.h"
#include "cachesvc/metrics.h"
#include "cachesvc/tenants.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "cachesvc/wire.h"
#include "proto/layout.h"

namespace cachesvc {

class SessionOps;

class BlockServiceImpl final : public v1::BlockService::CallbackService {
 public:
  // All must outlive the service. `ucx_address`: the data plane's listen address ("" = none);
  // `local_socket`: the same-host data plane's socket ("" = none). `layouts` (may be null) learns
  // each layout an engine registers, for SessionService.
  BlockServiceImpl(BlockStore* store, const TenantRegistry* tenants, std::string ucx_address,
                   std::string local_socket, metrics::Registry* metrics,
                   KnownLayouts* layouts = nullptr, SessionOps* sessions = nullptr);

  // What RegisterEngine recorded for an engine id.
  struct Engine {
    std::string tenant;
    ModelLayout layout;
    std::uint64_t fingerprint = 0;
  };
  // The engine of that id, whatever its tenant (NOT_FOUND for an id RegisterEngine never handed
  // out): for the local data plane, whose peers name their engine id instead of a token.
  [[nodiscard]] absl::StatusOr<Engine> EngineById(std::string_view engine_id) const;

  grpc::ServerUnaryReactor* RegisterEngine(grpc::CallbackServerContext* context,
                                           const v1::RegisterEngineRequest* request,
                                           v1::RegisterEngineResponse* response) override;
  grpc::ServerUnaryReactor* LookupPrefix(grpc::CallbackServerContext* context,
                                         const v1::LookupPrefixRequest* request,
                                         v1::LookupPrefixResponse* response) override;
  grpc::ServerUnaryReactor* LeaseBlocks(grpc::CallbackServerContext* context,
                                        const v1::LeaseBlocksRequest* request,
                                        v1::LeaseBlocksResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseLeases(grpc::CallbackServerContext* context,
                                          const v1::ReleaseLeasesRequest* request,
                                          v1::ReleaseLeasesResponse* response) override;
  grpc::ServerUnaryReactor* AllocateBlocks(grpc::CallbackServerContext* context,
                                           const v1::AllocateBlocksRequest* request,
                                           v1::AllocateBlocksResponse* response) override;
  grpc::ServerUnaryReactor* CommitBlocks(grpc::CallbackServerContext* context,
                                         const v1::CommitBlocksRequest* request,
                                         v1::CommitBlocksResponse* response) override;
  grpc::ServerUnaryReactor* TagBlocks(grpc::CallbackServerContext* context,
                                      const v1::TagBlocksRequest* request,
                                      v1::TagBlocksResponse* response) override;

  // Most keys one request may carry.
  static constexpr int kMaxKeys = kMaxKeysPerRequest;

 private:
  // The tenant and the engine (NOT_FOUND for an unknown one or another tenant's).
  [[nodiscard]] absl::StatusOr<Engine> FindEngine(const Tenant& tenant,
                                                  const std::string& engine_id) const;
  // Finishes the call, counting it and its latency per method.
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const char* method,
                                   std::chrono::steady_clock::time_point start,
                                   const absl::Status& status);

  BlockStore* const store_;
  const TenantRegistry* const tenants_;
  const std::string ucx_address_;
  const std::string local_socket_;
  metrics::Registry* const metrics_;
  KnownLayouts* const layouts_;
  SessionOps* const sessions_;
  mutable Mutex mu_;
  std::map<std::string, Engine> engines_ ABSL_GUARDED_BY(mu_);
  // (tenant, layout fingerprint) -> its engine id.
  std::map<std::pair<std::string, std::uint64_t>, std::string> engine_by_layout_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc
