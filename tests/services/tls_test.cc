// Certificates, identities and API keys: what `strata certs` makes, what a
// process refuses to start with (each error naming the flag and file), and
// the constant-time key check of the public plane.
#include "services/common/tls.h"

#include <sys/stat.h>

#include <fstream>

#include "gtest/gtest.h"
#include "services/common/certs.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::FreshDir;
using testing::ReadFile;

TEST(IdentityTest, UrisRoundTripAndBadOnesAreNamed) {
  auto id = ParseIdentityUri(IdentityUri(Role::kWorker, "worker-3"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->role, Role::kWorker);
  EXPECT_EQ(id->name, "worker-3");
  EXPECT_EQ(IdentityUri(Role::kCoordinator, "c"), "spiffe://strata/coordinator/c");
  for (const char* bad :
       {"spiffe://other/worker/x", "spiffe://strata/worker/", "spiffe://strata/",
        "spiffe://strata/root/x", "spiffe://strata/worker/a b", "spiffe://strata/worker/../x"}) {
    EXPECT_FALSE(ParseIdentityUri(bad).ok()) << bad;
  }
  EXPECT_EQ(DescribeIdentity({}), "a peer without a certificate");
}

class CertsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir("certs");
    ASSERT_TRUE(MakeCertificates(dir_, ClusterCertRequests(2), {"10.0.0.7", "node-a"}, 2).ok());
  }
  TlsFiles Files(const std::string& name) const {
    return {dir_ + "/" + name + ".crt", dir_ + "/" + name + ".key", dir_ + "/ca.crt"};
  }
  std::string dir_;
};

TEST_F(CertsTest, EachIdentityLoadsWithItsRoleAndKeysArePrivate) {
  for (const auto& [name, role] :
       std::vector<std::pair<std::string, Role>>{{"coordinator", Role::kCoordinator},
                                                 {"gateway", Role::kGateway},
                                                 {"operator", Role::kOperator},
                                                 {"worker-0", Role::kWorker},
                                                 {"worker-1", Role::kWorker}}) {
    auto s = TransportSecurity::Mutual(Files(name));
    ASSERT_TRUE(s.ok()) << name << ": " << s.status();
    EXPECT_TRUE((*s)->mutual());
    EXPECT_EQ((*s)->self().role, role) << name;
    EXPECT_EQ((*s)->self().name, name);
    struct stat st;
    ASSERT_EQ(stat((dir_ + "/" + name + ".key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600) << name;
  }
}

TEST_F(CertsTest, ASecondRunReusesTheCaSoOldAndNewCertificatesTrustEachOther) {
  const std::string ca = ReadFile(dir_ + "/ca.crt");
  ASSERT_TRUE(MakeCertificates(dir_, {{Role::kWorker, "worker-9"}}, {}, 1).ok());
  EXPECT_EQ(ReadFile(dir_ + "/ca.crt"), ca);
  EXPECT_TRUE(TransportSecurity::Mutual(Files("worker-9")).ok());
  EXPECT_TRUE(TransportSecurity::Mutual(Files("worker-0")).ok());
}

TEST_F(CertsTest, BadFilesAreRefusedNamingTheFlagAndFile) {
  TlsFiles partial = Files("worker-0");
  partial.ca.clear();
  auto s = TransportSecurity::Mutual(partial);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-ca: required"), std::string::npos) << s.status();

  TlsFiles missing = Files("worker-0");
  missing.cert = dir_ + "/nope.crt";
  s = TransportSecurity::Mutual(missing);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-cert: cannot read " + missing.cert), std::string::npos)
      << s.status();

  TlsFiles swapped = Files("worker-0");
  swapped.key = dir_ + "/worker-1.key";
  s = TransportSecurity::Mutual(swapped);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("is not the key of the certificate"), std::string::npos)
      << s.status();

  TlsFiles garbage = Files("worker-0");
  garbage.cert = dir_ + "/garbage.crt";
  std::ofstream(garbage.cert) << "not a certificate";
  s = TransportSecurity::Mutual(garbage);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("holds no PEM certificate"), std::string::npos) << s.status();

  const std::string other = FreshDir("other-ca");
  ASSERT_TRUE(MakeCertificates(other, {{Role::kWorker, "worker-0"}}, {}, 1).ok());
  TlsFiles foreign = Files("worker-0");
  foreign.ca = other + "/ca.crt";
  s = TransportSecurity::Mutual(foreign);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("is not signed by the CA"), std::string::npos) << s.status();

  EXPECT_FALSE(TransportSecurity::Mutual({}).value()->secure());
  EXPECT_FALSE(TransportSecurity::ServerOnly(dir_ + "/gateway.crt", "", "public-tls").ok());
  EXPECT_TRUE(
      TransportSecurity::ServerOnly(dir_ + "/gateway.crt", dir_ + "/gateway.key", "public-tls")
          .ok());
}

TEST(ApiKeysTest, KeysFromAFileAndTheBearerHeader) {
  const std::string dir = FreshDir("keys");
  std::ofstream(dir + "/keys")
      << "# team a\nsk-aaaaaaaaaaaaaaaaaaaa\n\n  sk-bbbbbbbbbbbbbbbbbbbb  \n";
  auto keys = ApiKeys::FromFile(dir + "/keys");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->CheckHeader("Bearer sk-aaaaaaaaaaaaaaaaaaaa").ok());
  EXPECT_TRUE(keys->CheckHeader("Bearer sk-bbbbbbbbbbbbbbbbbbbb").ok());
  for (const char* bad : {"", "sk-aaaaaaaaaaaaaaaaaaaa", "Bearer sk-aaaaaaaaaaaaaaaaaaab",
                          "Bearer ", "Basic sk-aaaaaaaaaaaaaaaaaaaa"}) {
    const absl::Status st = keys->CheckHeader(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  std::ofstream(dir + "/short") << "abc\n";
  auto short_keys = ApiKeys::FromFile(dir + "/short");
  ASSERT_FALSE(short_keys.ok());
  EXPECT_NE(short_keys.status().message().find("line 1"), std::string::npos);
  std::ofstream(dir + "/empty") << "# nothing\n";
  EXPECT_FALSE(ApiKeys::FromFile(dir + "/empty").ok());
  EXPECT_FALSE(ApiKeys::FromFile(dir + "/absent").ok());
}

TEST(SecretsTest, TokensAreFreshAndComparedWhole) {
  const std::string a = RandomToken(), b = RandomToken();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(SecretsEqual(a, a));
  EXPECT_FALSE(SecretsEqual(a, b));
  EXPECT_FALSE(SecretsEqual(a, a.substr(0, 63)));
  EXPECT_FALSE(SecretsEqual("", a));
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

TEST_F(CertsTest, AProcessRefusesACertificateOfAnotherRole) {
  EXPECT_TRUE(TransportSecurity::MutualAs(Files("worker-0"), Role::kWorker).ok());
  auto s = TransportSecurity::MutualAs(Files("gateway"), Role::kWorker);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "--tls-cert: " + Files("gateway").cert + " is a gateway certificate, not a worker's");
  EXPECT_FALSE(TransportSecurity::MutualAs({}, Role::kCoordinator).value()->secure());
}

}  // namespace
}  // namespace strata
