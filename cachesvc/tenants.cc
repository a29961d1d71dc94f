#include "cachesvc/tenants.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

#include "base/errno_message.h"
#include "fmt/format.h"

namespace cachesvc {
namespace {

constexpr std::size_t kDigestBytes = 32;
// A salt file is the salt in lowercase hex and a newline, nothing else.
constexpr std::size_t kSaltFileBytes = 2 * kTenantSaltBytes + 1;
constexpr std::string_view kEmptyTokenSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Raw bytes of even-length hex text; false on a non-hex digit.
bool DecodeHex(std::string_view hex, std::string& out) {
  if (hex.size() % 2 != 0) return false;
  out.resize(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = HexDigit(hex[2 * i]), lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return true;
}

std::string EncodeHex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

std::string Sha256(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  // EVP_Digest fails only on allocation failure inside OpenSSL; there is no sensible way on.
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != kDigestBytes) {
    std::fprintf(stderr, "cachesvc: OpenSSL SHA-256 failed\n");
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(md.data()), len);
}

[[nodiscard]] absl::Status FileError(std::string_view what, const std::filesystem::path& path,
                                     int err) {
  const std::string message =
      fmt::format("cannot {} '{}': {}", what, path.string(), ErrnoMessage(err));
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

[[nodiscard]] absl::Status WriteAll(int fd, std::string_view data,
                                    const std::filesystem::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FileError("write", path, errno);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status FsyncDir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FileError("open", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return FileError("fsync", dir, err);
  return absl::OkStatus();
}

// Creates `salt_dir/<name>.salt` with a fresh salt: written to a temporary file, fsynced, renamed
// into place without replacing anything already there, and the folder fsynced.
[[nodiscard]] absl::StatusOr<std::string> CreateSalt(const std::filesystem::path& salt_dir,
                                                     const std::string& name) {
  std::string salt(kTenantSaltBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) !=
      1) {
    return absl::InternalError(
        fmt::format("cannot generate a salt for tenant '{}': OpenSSL RAND_bytes failed", name));
  }
  const std::filesystem::path path = salt_dir / (name + ".salt");
  const std::filesystem::path tmp = salt_dir / (name + ".salt.tmp");
  ::unlink(tmp.c_str());  // left by a crash between create and rename; never a live salt
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return FileError("create", tmp, errno);
  absl::Status status = ::fchmod(fd, 0600) == 0 ? absl::OkStatus() : FileError("chmod", tmp, errno);
  if (status.ok()) status = WriteAll(fd, EncodeHex(salt) + "\n", tmp);
  if (status.ok() && ::fsync(fd) != 0) status = FileError("fsync", tmp, errno);
  if (::close(fd) != 0 && status.ok()) status = FileError("close", tmp, errno);
  if (status.ok()) {
    // RENAME_NOREPLACE: a salt file that appeared meanwhile is kept (and this one dropped) rather
    // than replaced. File systems without it (EINVAL) get a plain rename; the data folder lock
    // already keeps a second daemon out.
    int rc = ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) rc = ::rename(tmp.c_str(), path.c_str());
    if (rc != 0) status = FileError("rename into place", path, errno);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  if (absl::Status s = FsyncDir(salt_dir); !s.ok()) return s;
  return salt;
}

// The salt of `name`: read back from its file, or made when there is no file.
[[nodiscard]] absl::StatusOr<std::string> LoadOrCreateSalt(const std::filesystem::path& salt_dir,
                                                           const std::string& name) {
  const std::filesystem::path path = salt_dir / (name + ".salt");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) return CreateSalt(salt_dir, name);
  if (fd < 0) return FileError("open", path, errno);
  std::array<char, kSaltFileBytes + 1> buf{};  // one more, to see a file that is too long
  std::size_t got = 0;
  int err = 0;
  while (got < buf.size()) {
    const ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (err != 0) return FileError("read", path, err);
  const std::string_view text(buf.data(), got);
  std::string salt;
  const bool lowercase = text.find_first_of("ABCDEF") == std::string_view::npos;
  if (got != kSaltFileBytes || text.back() != '\n' || !lowercase ||
      !DecodeHex(text.substr(0, kSaltFileBytes - 1), salt)) {
    return absl::DataLossError(fmt::format(
        "salt file '{}' of tenant '{}' is damaged ({} bytes; expected {} lowercase hex digits "
        "and a newline). Every block key of the tenant derives from it: restore the file from a "
        "backup, or delete it to start the tenant over with an empty cache",
        path.string(), name, got, 2 * kTenantSaltBytes));
  }
  return salt;
}

// "host_bytes 0 -> 1024, sessions 5 -> 0" for the fields that differ.
std::string DescribeQuotaChange(const TenantQuota& from, const TenantQuota& to) {
  const std::tuple<std::string_view, std::int64_t, std::int64_t> fields[] = {
      {"hbm_bytes", from.hbm_bytes, to.hbm_bytes},
      {"host_bytes", from.host_bytes, to.host_bytes},
      {"nvme_bytes", from.nvme_bytes, to.nvme_bytes},
      {"sessions", from.sessions, to.sessions}};
  std::string out;
  for (const auto& [field, a, b] : fields) {
    if (a != b) out += fmt::format("{}{} {} -> {}", out.empty() ? "" : ", ", field, a, b);
  }
  return out;
}

// The list in force for a configuration: an empty one means the implicit default tenant.
std::vector<TenantConfig> Effective(const std::vector<TenantConfig>& tenants) {
  if (!tenants.empty()) return tenants;
  TenantConfig open;
  open.name = std::string(kDefaultTenant);
  return {open};
}

}  // namespace

absl::Status CheckTenantName(std::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("'{}' is not 1 to 64 of a-z, 0-9, '_' and '-'", name));
}

absl::Status CheckTokenSha256(std::string_view hex) {
  std::string bytes;
  if (hex.size() != 2 * kDigestBytes || !DecodeHex(hex, bytes)) {
    return absl::InvalidArgumentError(fmt::format(
        "'{}' is not a SHA-256 in hex (64 hex digits; `cachectl hash-token` prints one)", hex));
  }
  if (EncodeHex(bytes) == kEmptyTokenSha256) {
    return absl::InvalidArgumentError("is the SHA-256 of an empty token");
  }
  return absl::OkStatus();
}

absl::Status CheckTenantCodec(std::string_view codec) {
  if (kernels::CodecFromName(codec).has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("'{}' is not one of raw, tq4, tq3", codec));
}

absl::Status CheckTenantQuota(std::int64_t value) {
  if (value >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("{} is negative (0 means no quota)", value));
}

absl::Status ValidateTenantConfigs(const std::vector<TenantConfig>& tenants) {
  auto fail = [](std::size_t i, std::string_view key, const absl::Status& s) {
    return absl::InvalidArgumentError(
        fmt::format("tenants[{}].{}: {}", i, key, std::string(s.message())));
  };
  std::map<std::string, std::size_t, std::less<>> names;
  std::map<std::string, std::size_t, std::less<>> tokens;  // digest -> tenant index
  for (std::size_t i = 0; i < tenants.size(); ++i) {
    const TenantConfig& t = tenants[i];
    if (absl::Status s = CheckTenantName(t.name); !s.ok()) return fail(i, "name", s);
    if (auto [it, added] = names.emplace(t.name, i); !added) {
      return fail(i, "name",
                  absl::InvalidArgumentError(
                      fmt::format("'{}' is also tenants[{}]'s name", t.name, it->second)));
    }
    if (t.token_sha256.empty()) {
      return fail(i, "token_sha256", absl::InvalidArgumentError("needs at least one token hash"));
    }
    for (const std::string& hex : t.token_sha256) {
      if (absl::Status s = CheckTokenSha256(hex); !s.ok()) return fail(i, "token_sha256", s);
      std::string digest;
      DecodeHex(hex, digest);
      if (auto [it, added] = tokens.emplace(digest, i); !added) {
        return fail(i, "token_sha256",
                    absl::InvalidArgumentError(fmt::format(
                        "'{}' is listed twice (also in tenants[{}]); a token names one tenant", hex,
                        it->second)));
      }
    }
    const std::pair<std::string_view, std::int64_t> quotas[] = {
        {"quota_hbm_bytes", t.quota.hbm_bytes},
        {"quota_host_bytes", t.quota.host_bytes},
        {"quota_nvme_bytes", t.quota.nvme_bytes},
        {"quota_sessions", t.quota.sessions}};
    for (const auto& [key, value] : quotas) {
      if (absl::Status s = CheckTenantQuota(value); !s.ok()) return fail(i, key, s);
    }
    if (absl::Status s = CheckTenantCodec(t.codec); !s.ok()) return fail(i, "codec", s);
  }
  return absl::OkStatus();
}

std::string Sha256Hex(std::string_view data) { return EncodeHex(Sha256(data)); }

TenantQuota Tenant::quota() const {
  MutexLock lock(&mu_);
  return quota_;
}

kernels::CodecId Tenant::codec() const {
  MutexLock lock(&mu_);
  return codec_;
}

void Tenant::Set(TenantQuota quota, kernels::CodecId codec) {
  MutexLock lock(&mu_);
  quota_ = quota;
  codec_ = codec;
}

TenantRegistry::~TenantRegistry() = default;

absl::StatusOr<std::unique_ptr<TenantRegistry>> TenantRegistry::Open(
    const std::vector<TenantConfig>& tenants, const std::filesystem::path& data_dir) {
  const std::filesystem::path salt_dir = data_dir / "tenants";
  if (::mkdir(salt_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return FileError("create", salt_dir, errno);
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(salt_dir, ec)) {
    return absl::FailedPreconditionError(fmt::format("'{}' is not a folder", salt_dir.string()));
  }
  std::unique_ptr<TenantRegistry> registry(new TenantRegistry(salt_dir));
  if (absl::Status s = registry->Reload(tenants); !s.ok()) return s;
  return registry;
}

absl::StatusOr<const Tenant*> TenantRegistry::Authenticate(
    std::string_view authorization_header_value) const {
  if (!auth_required()) {
    const Tenant* open = Find(kDefaultTenant);
    if (open != nullptr) return open;
  }
  std::string_view value = authorization_header_value;
  if (value.empty()) {
    return absl::UnauthenticatedError(
        "missing 'authorization' metadata; this daemon needs 'Bearer <token>'");
  }
  constexpr std::string_view kScheme = "bearer ";
  const bool bearer =
      value.size() > kScheme.size() &&
      std::equal(kScheme.begin(), kScheme.end(), value.begin(), [](char want, char got) {
        return want == (got >= 'A' && got <= 'Z' ? static_cast<char>(got - 'A' + 'a') : got);
      });
  if (!bearer) {
    return absl::UnauthenticatedError("'authorization' metadata is not 'Bearer <token>'");
  }
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  const bool printable =
      std::all_of(value.begin(), value.end(), [](char c) { return c > ' ' && c < 0x7f; });
  if (value.empty() || !printable) {
    return absl::UnauthenticatedError(
        "the bearer token in 'authorization' is empty or holds spaces or control characters");
  }
  const std::string digest = Sha256(value);
  std::shared_ptr<const TokenTable> tokens;
  {
    MutexLock lock(&mu_);
    tokens = tokens_;
  }
  // Every entry is compared, in constant time, whatever matched before.
  const Tenant* found = nullptr;
  for (const TokenEntry& entry : *tokens) {
    const bool equal = CRYPTO_memcmp(entry.digest.data(), digest.data(), kDigestBytes) == 0;
    found = equal ? entry.tenant : found;
  }
  if (found == nullptr) return absl::UnauthenticatedError("unknown bearer token");
  return found;
}

const Tenant* TenantRegistry::Find(std::string_view name) const {
  MutexLock lock(&mu_);
  auto it = tenants_.find(name);
  return it == tenants_.end() ? nullptr : it->second.get();
}

std::vector<const Tenant*> TenantRegistry::List() const {
  MutexLock lock(&mu_);
  std::vector<const Tenant*> out;
  out.reserve(tenants_.size());
  for (const auto& [name, tenant] : tenants_) out.push_back(tenant.get());
  return out;
}

absl::Status TenantRegistry::Reload(const std::vector<TenantConfig>& tenants,
                                    std::string* changes) {
  if (absl::Status s = ValidateTenantConfigs(tenants); !s.ok()) return s;
  const std::vector<TenantConfig> wanted = Effective(tenants);
  MutexLock reload(&reload_mu_);

  // Only Reload changes the map, and reloads are serialized: reading it here without mu_ would be
  // safe, but the annotations ask for the lock and it is cheap.
  std::vector<std::string> removed;
  std::set<std::string, std::less<>> wanted_names;
  for (const TenantConfig& t : wanted) wanted_names.insert(t.name);
  {
    MutexLock lock(&mu_);
    for (const auto& [name, tenant] : tenants_) {
      if (!wanted_names.contains(name)) removed.push_back(name);
    }
  }
  if (!removed.empty()) {
    std::string list;
    for (const std::string& name : removed)
      list += fmt::format("{}'{}'", list.empty() ? "" : ", ", name);
    return absl::FailedPreconditionError(fmt::format(
        "the configuration drops tenant {}: a tenant cannot be removed while the daemon runs, "
        "because its blocks and sessions still exist{}; put it back in the configuration",
        list, tenants.empty() ? " (an empty tenant list means only the implicit 'default')" : ""));
  }

  // Salts of new tenants, made before anything in force changes.
  std::map<std::string, std::unique_ptr<Tenant>, std::less<>> added;
  for (const TenantConfig& t : wanted) {
    if (Find(t.name) != nullptr) continue;
    absl::StatusOr<std::string> salt = LoadOrCreateSalt(salt_dir_, t.name);
    if (!salt.ok()) return salt.status();
    added.emplace(t.name, std::unique_ptr<Tenant>(new Tenant(t.name, *std::move(salt), t.quota,
                                                             *kernels::CodecFromName(t.codec))));
  }

  std::vector<std::string> notes;
  auto note = [&notes](std::string text) { notes.push_back(std::move(text)); };
  const bool auth = !tenants.empty();
  if (auth != auth_required()) {
    note(auth ? "bearer tokens now required" : "open mode: no token required");
  }
  MutexLock lock(&mu_);
  // Token sets per tenant, old and new, for the summary.
  std::map<std::string, std::set<std::string>, std::less<>> old_tokens, new_tokens;
  if (tokens_ != nullptr) {
    for (const TokenEntry& e : *tokens_) old_tokens[e.tenant->name()].insert(e.digest);
  }
  for (auto& [name, tenant] : added) {
    note(fmt::format("added tenant '{}'", name));
    tenants_.emplace(name, std::move(tenant));
  }
  auto table = std::make_shared<TokenTable>();
  for (const TenantConfig& t : wanted) {
    Tenant* tenant = tenants_.find(t.name)->second.get();
    const kernels::CodecId codec = *kernels::CodecFromName(t.codec);
    if (!added.contains(t.name)) {
      const TenantQuota old_quota = tenant->quota();
      const kernels::CodecId old_codec = tenant->codec();
      if (old_quota != t.quota) {
        note(fmt::format("tenant '{}': quota {}", t.name, DescribeQuotaChange(old_quota, t.quota)));
      }
      if (old_codec != codec) {
        note(fmt::format("tenant '{}': codec {} -> {}", t.name, kernels::CodecName(old_codec),
                         t.codec));
      }
      tenant->Set(t.quota, codec);
    }
    for (const std::string& hex : t.token_sha256) {
      std::string digest;
      DecodeHex(hex, digest);
      new_tokens[t.name].insert(digest);
      table->push_back({std::move(digest), tenant});
    }
  }
  for (const auto& [name, set] : new_tokens) {
    const auto old = old_tokens.find(name);
    if (added.contains(name) || (old != old_tokens.end() && old->second == set)) continue;
    note(fmt::format("tenant '{}': tokens changed ({} now)", name, set.size()));
  }
  for (const auto& [name, set] : old_tokens) {
    if (!new_tokens.contains(name)) note(fmt::format("tenant '{}': tokens removed", name));
  }
  tokens_ = std::move(table);
  auth_required_.store(auth, std::memory_order_release);

  if (changes != nullptr) {
    std::string summary;
    for (const std::string& n : notes)
      summary += fmt::format("{}{}", summary.empty() ? "" : "; ", n);
    *changes = summary.empty() ? "no changes" : summary;
  }
  return absl::OkStatus();
}

}  // namespace cachesvc
