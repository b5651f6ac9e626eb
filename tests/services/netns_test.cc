// Multi-host over real addresses: the coordinator, the gateway, each worker
// and the client each get a network namespace of their own, joined by veth
// pairs to a bridge on a private test subnet, so every hop crosses a network
// interface and a real IP address, with mutual TLS on (certificates for
// those addresses from `strata certs`). The completion streamed through the
// gateway must equal `strata generate`'s. The test creates the namespaces
// and removes them (and every process it started); where namespaces cannot
// be created (no root, no CAP_SYS_ADMIN) it skips saying why.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

class Namespaces {
 public:
  Namespaces() : prefix_(absl::StrCat("strata", getpid(), "-")) {
    std::mt19937 rng(static_cast<unsigned>(getpid()) ^ static_cast<unsigned>(time(nullptr)));
    subnet_ = absl::StrCat("10.231.", 1 + rng() % 250, ".");
  }
  ~Namespaces() {
    for (auto it = names_.rbegin(); it != names_.rend(); ++it) Ip("netns del " + *it);
  }
  // Creates the hub (a bridge); returns why not when namespaces are unavailable.
  bool Init(std::string* why) {
    std::string out;
    if (RunCommand("ip netns add " + Name("hub") + " 2>&1", &out) != 0) {
      *why = "cannot create a network namespace (" + out + ")";
      return false;
    }
    names_.push_back(Name("hub"));
    return Ip("-n " + Name("hub") + " link add br0 type bridge") &&
           Ip("-n " + Name("hub") + " link set br0 up");
  }
  // A namespace for `role` at subnet.`host`, wired to the bridge; its IP.
  std::string Add(const std::string& role, int host) {
    const std::string ns = Name(role), veth = absl::StrCat("v", getpid() % 100000, "h", host);
    const std::string ip = absl::StrCat(subnet_, host);
    EXPECT_TRUE(Ip("netns add " + ns));
    names_.push_back(ns);
    EXPECT_TRUE(Ip(absl::StrCat("link add ", veth, " type veth peer name eth0 netns ", ns)));
    EXPECT_TRUE(Ip(absl::StrCat("link set ", veth, " netns ", Name("hub"))));
    EXPECT_TRUE(Ip(absl::StrCat("-n ", Name("hub"), " link set ", veth, " master br0 up")));
    EXPECT_TRUE(Ip(absl::StrCat("-n ", ns, " addr add ", ip, "/24 dev eth0")));
    EXPECT_TRUE(Ip(absl::StrCat("-n ", ns, " link set eth0 up")));
    EXPECT_TRUE(Ip(absl::StrCat("-n ", ns, " link set lo up")));
    return ip;
  }
  std::string Name(const std::string& role) const { return prefix_ + role; }

 private:
  static bool Ip(const std::string& args) {
    std::string out;
    const int rc = RunCommand("ip " + args + " 2>&1", &out);
    EXPECT_EQ(rc, 0) << "ip " << args << ": " << out;
    return rc == 0;
  }
  std::string prefix_, subnet_;
  std::vector<std::string> names_;
};

// A process in namespace `ns`; stopped with SIGTERM (then SIGKILL).
class Process {
 public:
  Process(const std::string& ns, std::vector<std::string> args, const std::string& log) {
    std::vector<std::string> argv = {"/usr/sbin/ip", "netns", "exec", ns};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = fork();
    if (pid_ == 0) {
      freopen(log.c_str(), "w", stdout);
      dup2(fileno(stdout), STDERR_FILENO);
      std::vector<char*> c;
      for (std::string& a : argv) c.push_back(a.data());
      c.push_back(nullptr);
      execv(c[0], c.data());
      _exit(127);
    }
  }
  ~Process() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 500; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }

 private:
  pid_t pid_ = -1;
};

TEST(NetnsTest, EveryProcessOnItsOwnHostWithMutualTls) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)";
  std::string out;
  if (RunCommand("command -v ip", &out) != 0) GTEST_SKIP() << "no `ip` command (iproute2)";
  Namespaces net;
  std::string why;
  if (!net.Init(&why)) GTEST_SKIP() << why;
  const std::string coordinator = net.Add("coordinator", 2), gateway = net.Add("gateway", 3),
                    w0 = net.Add("worker0", 4), w1 = net.Add("worker1", 5);
  net.Add("client", 6);

  const std::string dir = FreshDir("netns"), certs = dir + "/certs";
  const std::string& model = TestModel("llama");
  ASSERT_EQ(RunCommand(absl::StrCat(STRATA_BINARY, " certs --out ", certs, " --workers 2 --hosts ",
                                    absl::StrJoin({coordinator, gateway, w0, w1}, ","), " 2>&1"),
                       &out),
            0)
      << out;
  auto tls = [&](const std::string& name) -> std::vector<std::string> {
    return {"--tls-cert", certs + "/" + name + ".crt",
            "--tls-key",  certs + "/" + name + ".key",
            "--tls-ca",   certs + "/ca.crt"};
  };
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string port = ":50051";
  Process c(net.Name("coordinator"),
            with({STRATA_BINARY, "coordinator", "--model", model, "--workers", "2", "--listen",
                  coordinator + port, "--metrics-listen", ""},
                 tls("coordinator")),
            dir + "/coordinator.log");
  std::vector<std::unique_ptr<Process>> workers;
  for (const auto& [i, ip] : std::vector<std::pair<int, std::string>>{{0, w0}, {1, w1}}) {
    const std::string id = absl::StrCat("worker-", i);
    workers.push_back(std::make_unique<Process>(
        net.Name(absl::StrCat("worker", i)),
        with({STRATA_BINARY, "worker", "--id", id, "--coordinator", coordinator + port, "--listen",
              ip + port, "--metrics-listen", ""},
             tls(id)),
        dir + "/" + id + ".log"));
  }
  Process g(net.Name("gateway"),
            with({STRATA_BINARY, "gateway", "--coordinator", coordinator + port, "--listen",
                  gateway + port, "--metrics-listen", ""},
                 tls("gateway")),
            dir + "/gateway.log");

  const std::string prompt = "The old lighthouse keeper";
  std::string want;
  ASSERT_EQ(RunCommand(absl::StrCat(STRATA_BINARY, " generate --model ", model, " --prompt '",
                                    prompt, "' --max-tokens 16 2>/dev/null"),
                       &want),
            0);
  // The client, from its own namespace, retries until the cluster serves.
  std::string got;
  int rc = -1;
  for (int attempt = 0; attempt < 150 && rc != 0; ++attempt) {
    rc = RunCommand(absl::StrCat("ip netns exec ", net.Name("client"), " ", STRATA_BINARY,
                                 " client --address ", gateway, port, " --prompt '", prompt,
                                 "' --max-tokens 16 --timeout-ms 5000 2>/dev/null"),
                    &got);
    if (rc != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(rc, 0) << got << "\ncoordinator:\n"
                   << ReadFile(dir + "/coordinator.log") << "\ngateway:\n"
                   << ReadFile(dir + "/gateway.log") << "\nworker-0:\n"
                   << ReadFile(dir + "/worker-0.log");
  EXPECT_EQ(got, want);
  // The hops crossed the namespaces' addresses: the coordinator planned the
  // workers at theirs.
  const std::string log = ReadFile(dir + "/coordinator.log");
  EXPECT_NE(log.find("registered from " + w0 + port), std::string::npos) << log;
  EXPECT_NE(log.find("registered from " + w1 + port), std::string::npos) << log;
}

}  // namespace
}  // namespace strata::testing
