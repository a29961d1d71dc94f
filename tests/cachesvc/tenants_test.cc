#include "cachesvc/tenants.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace cachesvc {
namespace {

namespace fs = std::filesystem;

fs::path FreshDir() {
  auto dir = fs::path(::testing::TempDir()) /
             (std::string("tenants_test_") +
              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TenantConfig MakeTenant(const std::string& name, const std::vector<std::string>& tokens,
                        TenantQuota quota = {}, const std::string& codec = "raw") {
  TenantConfig t;
  t.name = name;
  for (const std::string& token : tokens) t.token_sha256.push_back(Sha256Hex(token));
  t.quota = quota;
  t.codec = codec;
  return t;
}

std::unique_ptr<TenantRegistry> MustOpen(const std::vector<TenantConfig>& tenants,
                                         const fs::path& dir) {
  auto registry = TenantRegistry::Open(tenants, dir);
  EXPECT_TRUE(registry.ok()) << registry.status();
  return registry.ok() ? *std::move(registry) : nullptr;
}

TEST(Sha256HexTest, KnownVectors) {
  // FIPS 180-2 examples.
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(TenantRegistryTest, SaltsAreCreatedPersistedStableAndDistinct) {
  const fs::path dir = FreshDir();
  const std::vector<TenantConfig> config = {MakeTenant("alice", {"tok-a"}),
                                            MakeTenant("bob", {"tok-b"})};
  std::string alice_salt, bob_salt;
  {
    auto registry = MustOpen(config, dir);
    ASSERT_NE(registry, nullptr);
    const Tenant* alice = registry->Find("alice");
    const Tenant* bob = registry->Find("bob");
    ASSERT_NE(alice, nullptr);
    ASSERT_NE(bob, nullptr);
    EXPECT_EQ(registry->Find("carol"), nullptr);
    alice_salt = alice->salt();
    bob_salt = bob->salt();
    EXPECT_EQ(alice_salt.size(), kTenantSaltBytes);
    EXPECT_EQ(bob_salt.size(), kTenantSaltBytes);
    EXPECT_NE(alice_salt, bob_salt);
    EXPECT_NE(alice_salt, std::string(kTenantSaltBytes, '\0'));
  }
  for (const char* name : {"alice", "bob"}) {
    const fs::path file = dir / "tenants" / (std::string(name) + ".salt");
    ASSERT_TRUE(fs::exists(file)) << file;
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
    const std::string text = ReadFile(file);
    EXPECT_EQ(text.size(), 2 * kTenantSaltBytes + 1);
    EXPECT_EQ(text.back(), '\n');
  }
  EXPECT_FALSE(fs::exists(dir / "tenants" / "alice.salt.tmp"));
  // A second start reads the same salts back.
  auto again = MustOpen(config, dir);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->Find("alice")->salt(), alice_salt);
  EXPECT_EQ(again->Find("bob")->salt(), bob_salt);
  // Another data folder is another world: fresh salts.
  const fs::path other = dir / "other";
  fs::create_directories(other);
  auto elsewhere = MustOpen(config, other);
  ASSERT_NE(elsewhere, nullptr);
  EXPECT_NE(elsewhere->Find("alice")->salt(), alice_salt);
}

TEST(TenantRegistryTest, DamagedSaltFileIsDataLossAndIsKept) {
  const fs::path dir = FreshDir();
  const std::vector<TenantConfig> config = {MakeTenant("alice", {"tok-a"})};
  ASSERT_NE(MustOpen(config, dir), nullptr);
  const fs::path file = dir / "tenants" / "alice.salt";
  const std::string good = ReadFile(file);
  const std::vector<std::string> damaged = {
      "",                                           // emptied
      good.substr(0, 10),                           // truncated
      good + "00",                                  // too long
      good.substr(0, good.size() - 1) + "x",        // no newline
      "zz" + good.substr(2),                        // not hex
      std::string(1, 'A') + good.substr(1),         // upper case is not what was written
      std::string(2 * kTenantSaltBytes + 1, '\n'),  // right size, wrong bytes
  };
  for (const std::string& text : damaged) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
    auto registry = TenantRegistry::Open(config, dir);
    ASSERT_FALSE(registry.ok()) << "accepted salt file '" << text << "'";
    EXPECT_EQ(registry.status().code(), absl::StatusCode::kDataLoss) << registry.status();
    EXPECT_NE(registry.status().message().find("alice.salt"), std::string::npos);
    EXPECT_EQ(ReadFile(file), text) << "the damaged file was replaced";
  }
}

TEST(TenantRegistryTest, AuthenticateMapsTokensToTheirTenant) {
  const fs::path dir = FreshDir();
  auto registry = MustOpen(
      {MakeTenant("alice", {"alice-token-1", "alice-token-2"}), MakeTenant("bob", {"bob-token"})},
      dir);
  ASSERT_NE(registry, nullptr);
  EXPECT_TRUE(registry->auth_required());
  for (const char* header : {"Bearer alice-token-1", "Bearer alice-token-2", "bearer alice-token-1",
                             "BEARER  alice-token-2"}) {
    auto tenant = registry->Authenticate(header);
    ASSERT_TRUE(tenant.ok()) << header << ": " << tenant.status();
    EXPECT_EQ((*tenant)->name(), "alice") << header;
  }
  auto bob = registry->Authenticate("Bearer bob-token");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ((*bob)->name(), "bob");
  EXPECT_EQ(*bob, registry->Find("bob"));
}

TEST(TenantRegistryTest, BadHeadersAreUnauthenticatedAndNeverEchoTheToken) {
  const fs::path dir = FreshDir();
  auto registry = MustOpen({MakeTenant("alice", {"s3cret-alice"})}, dir);
  ASSERT_NE(registry, nullptr);
  struct Case {
    std::string header;
    std::string secret;  // what must not appear in the message
  };
  const std::vector<Case> cases = {
      {"Bearer wrong-s3cret", "wrong-s3cret"},
      {"s3cret-alice", "s3cret-alice"},               // no scheme
      {"Basic s3cret-alice", "s3cret-alice"},         // another scheme
      {"Bearers3cret-alice", "s3cret-alice"},         // no space
      {"Bearer ", ""},                                // empty token
      {"Bearer    ", ""},                             // only spaces
      {"", ""},                                       // no header
      {"Bearer s3cret-alice extra", "s3cret-alice"},  // a space inside
      {"Bearer s3cret-alice\n", "s3cret-alice"},      // a control character
      {"Bearer S3CRET-ALICE", "S3CRET-ALICE"},        // tokens are case-sensitive
  };
  for (const Case& c : cases) {
    auto tenant = registry->Authenticate(c.header);
    ASSERT_FALSE(tenant.ok()) << "'" << c.header << "' was accepted";
    EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated) << c.header;
    EXPECT_FALSE(tenant.status().message().empty());
    if (!c.secret.empty()) {
      EXPECT_EQ(tenant.status().message().find(c.secret), std::string::npos)
          << tenant.status().message();
      EXPECT_EQ(tenant.status().message().find("s3cret"), std::string::npos)
          << tenant.status().message();
    }
  }
}

TEST(TenantRegistryTest, OpenModeWithoutTenantsHasAPersistedDefaultTenant) {
  const fs::path dir = FreshDir();
  std::string salt;
  {
    auto registry = MustOpen({}, dir);
    ASSERT_NE(registry, nullptr);
    EXPECT_FALSE(registry->auth_required());
    for (const char* header : {"", "Bearer anything", "garbage"}) {
      auto tenant = registry->Authenticate(header);
      ASSERT_TRUE(tenant.ok()) << header << ": " << tenant.status();
      EXPECT_EQ((*tenant)->name(), kDefaultTenant);
    }
    const Tenant* open = registry->Find(kDefaultTenant);
    ASSERT_NE(open, nullptr);
    EXPECT_EQ(open->salt().size(), kTenantSaltBytes);
    EXPECT_EQ(open->quota(), TenantQuota{});
    EXPECT_EQ(open->codec(), kernels::CodecId::kRaw);
    salt = open->salt();
    ASSERT_EQ(registry->List().size(), 1u);
  }
  EXPECT_TRUE(fs::exists(dir / "tenants" / "default.salt"));
  auto again = MustOpen({}, dir);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->Find(kDefaultTenant)->salt(), salt);
}

TEST(TenantRegistryTest, ReloadChangesTokensQuotasAndCodecLive) {
  const fs::path dir = FreshDir();
  auto registry = MustOpen({MakeTenant("alice", {"old-token"}, {.host_bytes = 1000})}, dir);
  ASSERT_NE(registry, nullptr);
  const Tenant* alice = registry->Find("alice");
  ASSERT_NE(alice, nullptr);
  const std::string salt = alice->salt();

  std::string changes;
  ASSERT_TRUE(
      registry
          ->Reload({MakeTenant("alice", {"new-token"}, {.host_bytes = 2000, .sessions = 5}, "tq3"),
                    MakeTenant("bob", {"bob-token"})},
                   &changes)
          .ok());
  EXPECT_NE(changes.find("added tenant 'bob'"), std::string::npos) << changes;
  EXPECT_NE(changes.find("host_bytes 1000 -> 2000"), std::string::npos) << changes;
  EXPECT_NE(changes.find("codec raw -> tq3"), std::string::npos) << changes;
  EXPECT_NE(changes.find("tenant 'alice': tokens changed"), std::string::npos) << changes;

  // The same object, changed in place: pointers taken before the reload stay good.
  EXPECT_EQ(registry->Find("alice"), alice);
  EXPECT_EQ(alice->salt(), salt);
  EXPECT_EQ(alice->quota().host_bytes, 2000);
  EXPECT_EQ(alice->quota().sessions, 5);
  EXPECT_EQ(alice->codec(), kernels::CodecId::kTq3);
  EXPECT_FALSE(registry->Authenticate("Bearer old-token").ok());
  auto now = registry->Authenticate("Bearer new-token");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(*now, alice);
  auto bob = registry->Authenticate("Bearer bob-token");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ((*bob)->name(), "bob");
  EXPECT_TRUE(fs::exists(dir / "tenants" / "bob.salt"));

  ASSERT_TRUE(
      registry
          ->Reload({MakeTenant("alice", {"new-token"}, {.host_bytes = 2000, .sessions = 5}, "tq3"),
                    MakeTenant("bob", {"bob-token"})},
                   &changes)
          .ok());
  EXPECT_EQ(changes, "no changes");
}

TEST(TenantRegistryTest, ReloadRefusesRemovalAndBadConfigsAndChangesNothing) {
  const fs::path dir = FreshDir();
  auto registry = MustOpen({MakeTenant("alice", {"a-token"}), MakeTenant("bob", {"b-token"})}, dir);
  ASSERT_NE(registry, nullptr);

  absl::Status removed = registry->Reload({MakeTenant("alice", {"a-token-2"})});
  EXPECT_EQ(removed.code(), absl::StatusCode::kFailedPrecondition) << removed;
  EXPECT_NE(removed.message().find("'bob'"), std::string::npos) << removed;
  EXPECT_NE(removed.message().find("blocks and sessions still exist"), std::string::npos)
      << removed;
  // Going back to open mode drops every configured tenant too.
  EXPECT_EQ(registry->Reload({}).code(), absl::StatusCode::kFailedPrecondition);

  TenantConfig bad = MakeTenant("alice", {"a-token-2"});
  bad.codec = "zstd";
  absl::Status invalid = registry->Reload({bad, MakeTenant("bob", {"b-token"})});
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument) << invalid;
  EXPECT_NE(invalid.message().find("tenants[0].codec"), std::string::npos) << invalid;

  // Nothing changed: the old tokens still work, the rejected new one does not.
  EXPECT_TRUE(registry->Authenticate("Bearer a-token").ok());
  EXPECT_TRUE(registry->Authenticate("Bearer b-token").ok());
  EXPECT_FALSE(registry->Authenticate("Bearer a-token-2").ok());
}

TEST(TenantRegistryTest, OpenModeBecomesAuthenticatedWhenDefaultIsKept) {
  const fs::path dir = FreshDir();
  auto registry = MustOpen({}, dir);
  ASSERT_NE(registry, nullptr);
  const std::string salt = registry->Find(kDefaultTenant)->salt();
  // Adding tenants without "default" would drop it.
  EXPECT_EQ(registry->Reload({MakeTenant("alice", {"a"})}).code(),
            absl::StatusCode::kFailedPrecondition);
  std::string changes;
  ASSERT_TRUE(
      registry->Reload({MakeTenant("default", {"d-token"}), MakeTenant("alice", {"a"})}, &changes)
          .ok());
  EXPECT_NE(changes.find("bearer tokens now required"), std::string::npos) << changes;
  EXPECT_TRUE(registry->auth_required());
  EXPECT_FALSE(registry->Authenticate("").ok());
  auto tenant = registry->Authenticate("Bearer d-token");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ((*tenant)->salt(), salt);  // the open-mode blocks stay reachable
}

TEST(TenantRegistryTest, OpenRejectsInvalidConfigs) {
  const fs::path dir = FreshDir();
  struct Case {
    std::vector<TenantConfig> tenants;
    std::string needle;
  };
  TenantConfig no_tokens = MakeTenant("alice", {});
  TenantConfig bad_hex = MakeTenant("alice", {"x"});
  bad_hex.token_sha256 = {"abc"};
  TenantConfig empty_token = MakeTenant("alice", {""});
  TenantConfig negative = MakeTenant("alice", {"x"}, {.nvme_bytes = -1});
  const std::vector<Case> cases = {
      {{MakeTenant("Alice", {"x"})}, "tenants[0].name"},
      {{MakeTenant("", {"x"})}, "tenants[0].name"},
      {{MakeTenant(std::string(65, 'a'), {"x"})}, "tenants[0].name"},
      {{MakeTenant("../etc", {"x"})}, "tenants[0].name"},
      {{MakeTenant("a", {"x"}), MakeTenant("a", {"y"})}, "tenants[1].name"},
      {{no_tokens}, "tenants[0].token_sha256"},
      {{bad_hex}, "tenants[0].token_sha256"},
      {{empty_token}, "empty token"},
      {{MakeTenant("a", {"x"}), MakeTenant("b", {"x"})}, "tenants[1].token_sha256"},
      {{negative}, "tenants[0].quota_nvme_bytes"},
  };
  for (const Case& c : cases) {
    auto registry = TenantRegistry::Open(c.tenants, dir);
    ASSERT_FALSE(registry.ok()) << c.needle;
    EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(registry.status().message().find(c.needle), std::string::npos) << registry.status();
  }
  EXPECT_FALSE(fs::exists(dir / "tenants" / "alice.salt"));  // nothing made for a refused list
}

TEST(TenantRegistryTest, UppercaseTokenHashesAreAccepted) {
  const fs::path dir = FreshDir();
  TenantConfig t = MakeTenant("alice", {"tok"});
  for (char& c : t.token_sha256[0]) c = static_cast<char>(std::toupper(c));
  auto registry = MustOpen({t}, dir);
  ASSERT_NE(registry, nullptr);
  EXPECT_TRUE(registry->Authenticate("Bearer tok").ok());
}

// Run under TSan too: Authenticate and Find on several threads while another reloads.
TEST(TenantRegistryTest, ConcurrentAuthenticateAndReload) {
  const fs::path dir = FreshDir();
  const std::vector<TenantConfig> a = {MakeTenant("alice", {"t1"}, {.host_bytes = 1}),
                                       MakeTenant("bob", {"b"})};
  const std::vector<TenantConfig> b = {MakeTenant("alice", {"t2"}, {.host_bytes = 2}, "tq4"),
                                       MakeTenant("bob", {"b"})};
  auto registry = MustOpen(a, dir);
  ASSERT_NE(registry, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        // bob's token never changes, so it must always authenticate.
        auto bob = registry->Authenticate("Bearer b");
        if (!bob.ok() || (*bob)->name() != "bob") bad.fetch_add(1);
        // alice authenticates with whichever token is in force, never as someone else.
        for (const char* header : {"Bearer t1", "Bearer t2"}) {
          auto alice = registry->Authenticate(header);
          if (alice.ok()) {
            if ((*alice)->name() != "alice") bad.fetch_add(1);
            const TenantQuota q = (*alice)->quota();
            if (q.host_bytes != 1 && q.host_bytes != 2) bad.fetch_add(1);
            (void)(*alice)->codec();
          }
        }
        if (registry->Find("alice") == nullptr) bad.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(registry->Reload(i % 2 == 0 ? b : a).ok());
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(registry->List().size(), 2u);
}

}  // namespace
}  // namespace cachesvc
