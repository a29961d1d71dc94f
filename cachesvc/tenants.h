// cachesvc/tenants.h: who may call the daemon, and the per-tenant facts the service owns.
//
// A tenant is a name, a key salt, quotas and a codec. The salt is the service's, never a
// client's (DESIGN.md "Block keys"): 32 random bytes made the first time a tenant is seen and
// kept in `<data_dir>/tenants/<name>.salt`; every block key of the tenant is seeded with it, so
// losing or replacing the file orphans every block the tenant stored. That is why a salt file
// that cannot be read back exactly is DATA_LOSS and is never silently regenerated.
//
// Authentication is a bearer token in the gRPC `authorization` metadata ("Bearer <token>"). The
// configuration holds only SHA-256 hashes of tokens (`cachectl hash-token` makes one); a request's
// token is hashed and compared with every configured hash in constant time.
//
// Open mode: with no tenants configured, the registry holds one implicit tenant named "default"
// (with a persisted salt, no quota beyond the tiers, codec raw), auth_required() is false and
// Authenticate returns that tenant whatever the header says. With tenants configured, every
// request needs a token.
//
// Lifetime and threads: TenantRegistry is thread-safe. A `const Tenant*` it returns stays valid as
// long as the registry, because a tenant is never removed (its blocks and sessions still exist):
// Reload refuses a configuration that drops one. A Tenant's name and salt never change; its
// quota and codec may change under a concurrent Reload, so read them through the accessors (each
// returns a copy taken under the tenant's lock) rather than caching them across requests.
//
// Open() must be called by the process that holds the data folder's lock (tiers/data_dir.h):
// the salt files are not otherwise protected against a second writer.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "kernels/codec.h"

namespace cachesvc {

// Hard limits per tenant, in bytes stored per tier and open sessions. 0 = no limit beyond the
// tier's capacity.
struct TenantQuota {
  std::int64_t hbm_bytes = 0, host_bytes = 0, nvme_bytes = 0;
  std::int64_t sessions = 0;

  friend bool operator==(const TenantQuota&, const TenantQuota&) = default;
};

// One `[[tenants]]` table of the configuration (docs/configuration.md).
struct TenantConfig {
  std::string name;                       // [a-z0-9_-]{1,64}, unique
  std::vector<std::string> token_sha256;  // hex SHA-256 of each accepted bearer token (>= 1)
  TenantQuota quota;
  std::string codec = "raw";  // raw|tq4|tq3: what this tenant's blocks are stored as below HBM
};

// The name of the implicit tenant of open mode.
inline constexpr std::string_view kDefaultTenant = "default";
// Bytes of a tenant's key salt.
inline constexpr std::size_t kTenantSaltBytes = 32;

// Field checks shared by the configuration loader and the registry. Each returns
// INVALID_ARGUMENT whose message says what is wrong with the value (the caller names the key).
[[nodiscard]] absl::Status CheckTenantName(std::string_view name);  // [a-z0-9_-]{1,64}
[[nodiscard]] absl::Status CheckTokenSha256(
    std::string_view hex);  // 64 hex digits, not the empty token's
[[nodiscard]] absl::Status CheckTenantCodec(std::string_view codec);  // raw, tq4 or tq3
[[nodiscard]] absl::Status CheckTenantQuota(std::int64_t value);      // >= 0
// Every field of every tenant, plus unique names and no token hash shared by two tenants (a token
// must name exactly one tenant). Messages start with `tenants[i].key: `.
[[nodiscard]] absl::Status ValidateTenantConfigs(const std::vector<TenantConfig>& tenants);

// Lowercase hex of the SHA-256 of `data` (OpenSSL EVP).
std::string Sha256Hex(std::string_view data);

class Tenant {
 public:
  Tenant(const Tenant&) = delete;
  Tenant& operator=(const Tenant&) = delete;

  const std::string& name() const { return name_; }
  // kTenantSaltBytes raw bytes: the `tenant_salt` of the block key seed.
  const std::string& salt() const { return salt_; }
  TenantQuota quota() const;
  // What the service stores this tenant's blocks as when they go down a tier.
  kernels::CodecId codec() const;

 private:
  friend class TenantRegistry;
  Tenant(std::string name, std::string salt, TenantQuota quota, kernels::CodecId codec)
      : name_(std::move(name)), salt_(std::move(salt)), quota_(quota), codec_(codec) {}
  void Set(TenantQuota quota, kernels::CodecId codec);

  // Constant after construction.
  const std::string name_;
  const std::string salt_;

  mutable Mutex mu_;
  TenantQuota quota_ ABSL_GUARDED_BY(mu_);
  kernels::CodecId codec_ ABSL_GUARDED_BY(mu_);
};

class TenantRegistry {
 public:
  // Validates `tenants` (INVALID_ARGUMENT, see ValidateTenantConfigs), creates
  // `<data_dir>/tenants/` (mode 0700) if missing, and reads or creates each tenant's salt (the
  // implicit "default" tenant's when `tenants` is empty). DATA_LOSS for a salt file that is not
  // exactly the format written (64 lowercase hex digits and a newline); PERMISSION_DENIED or
  // INTERNAL when a file cannot be read or written.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<TenantRegistry>> Open(
      const std::vector<TenantConfig>& tenants, const std::filesystem::path& data_dir);

  TenantRegistry(const TenantRegistry&) = delete;
  TenantRegistry& operator=(const TenantRegistry&) = delete;
  ~TenantRegistry();

  // Whether requests must carry a token (false only in open mode).
  bool auth_required() const { return auth_required_.load(std::memory_order_acquire); }

  // `authorization_header_value` is the gRPC `authorization` metadata ("" when absent). In open
  // mode, the default tenant. Otherwise "Bearer <token>" (scheme case-insensitive, token printable
  // ASCII without spaces) whose SHA-256 is configured for a tenant; UNAUTHENTICATED for a missing
  // or malformed value or an unknown token, with a message that never contains the token.
  [[nodiscard]] absl::StatusOr<const Tenant*> Authenticate(
      std::string_view authorization_header_value) const;

  // The tenant of that name, or nullptr.
  const Tenant* Find(std::string_view name) const;
  // Every tenant, by name.
  std::vector<const Tenant*> List() const;

  // Applies a new tenant list live: tokens, quotas and codecs change for the next call; a new
  // tenant gets its salt. FAILED_PRECONDITION when a tenant in force is missing from `tenants`
  // (its blocks and sessions still exist; an empty list keeps only "default"); INVALID_ARGUMENT
  // as Open; on any error nothing changes (a new tenant's salt file may already be written, which
  // is harmless). When `changes` is given it receives a one-line summary for the log ("no
  // changes" when nothing changed). Reloads are serialized; Authenticate never waits on file I/O.
  [[nodiscard]] absl::Status Reload(const std::vector<TenantConfig>& tenants,
                                    std::string* changes = nullptr);

 private:
  struct TokenEntry {
    std::string digest;  // 32 raw bytes of SHA-256
    const Tenant* tenant;
  };
  using TokenTable = std::vector<TokenEntry>;

  explicit TenantRegistry(std::filesystem::path salt_dir) : salt_dir_(std::move(salt_dir)) {}

  // Constant after construction.
  const std::filesystem::path salt_dir_;

  // Held for a whole Reload (salt I/O included), never by Authenticate.
  Mutex reload_mu_;
  std::atomic<bool> auth_required_{false};
  mutable Mutex mu_;
  // Tenants are only ever added, so pointers into this map stay valid.
  std::map<std::string, std::unique_ptr<Tenant>, std::less<>> tenants_ ABSL_GUARDED_BY(mu_);
  // Replaced whole by Reload; Authenticate copies the pointer and compares outside the lock.
  std::shared_ptr<const TokenTable> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc
