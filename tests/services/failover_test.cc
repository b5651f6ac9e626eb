// Failover with real processes and real signals: workers are SIGKILLed or
// SIGSTOPped mid-generation; every stream must complete with exactly the
// tokens of an undisturbed run (the single-process generator, which the
// pipeline tests show equal to an undisturbed cluster).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/server.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour", "She opened the door"};

struct Request {
  std::string prompt;
  int max_tokens;
  SamplingParams sampling;
};

std::vector<Request> ChaosRequests(int n) {
  std::vector<Request> out;
  for (int i = 0; i < n; ++i) {
    SamplingParams s;
    if (i % 2 == 1) {  // seeded sampling on every other stream
      s.temperature = 0.7f + 0.05f * (i % 5);
      s.top_k = i % 3 == 0 ? 0 : 20;
      s.top_p = 0.95f;
      s.seed = 77 + i;
    }
    out.push_back({kPrompts[i % 4], 60 + (i * 7) % 60, s});
  }
  return out;
}

// Runs every request at once while `disturb` acts on the cluster; checks
// each completion against its undisturbed single-process run.
void RunUnderFire(Cluster& cluster, const std::vector<Request>& requests,
                  const std::function<void()>& disturb) {
  const std::string& model = TestModel("llama");
  std::vector<StreamResult> got(requests.size());
  std::vector<std::thread> clients;
  std::atomic<int> done{0};
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      auto stub = cluster.generation();
      got[i] = Stream(*stub,
                      TextRequest(requests[i].prompt, requests[i].max_tokens, requests[i].sampling,
                                  /*ignore_eos=*/true),
                      120'000);
      ++done;
    });
  }
  disturb();
  const int done_before = done;
  for (auto& t : clients) t.join();
  // The disturbance happened while streams were still running.
  EXPECT_LT(done_before, static_cast<int>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) {
    const Reference ref = GenerateLocally(model, requests[i].prompt, requests[i].max_tokens,
                                          requests[i].sampling, /*ignore_eos=*/true);
    ASSERT_EQ(got[i].code, 0) << "stream " << i << ": " << got[i].message;
    EXPECT_EQ(got[i].tokens, ref.tokens) << "stream " << i << " lost or repeated tokens";
    EXPECT_EQ(got[i].text, ref.text) << "stream " << i;
    EXPECT_EQ(got[i].finished.completion_tokens(), ref.tokens.size()) << "stream " << i;
  }
}

// Picks a random worker still in the map.
ClusterAddress PickVictim(const Cluster& cluster, std::mt19937& rng) {
  const v1::ModelInfo info = cluster.Info();
  std::vector<std::string> ids;
  for (const auto& s : info.layer_map().stages()) ids.push_back(s.worker_id());
  const std::string id = ids[rng() % ids.size()];
  for (int i = 0; i < 8; ++i) {
    if (id == absl::StrCat("worker-", i)) return cluster.workers()[i];
  }
  ADD_FAILURE() << "unknown worker " << id;
  return {};
}

class ChaosTest : public ::testing::TestWithParam<int> {};  // the signal

TEST_P(ChaosTest, TwoWorkersLostMidStreamNoTokenLostOrRepeated) {
  const int sig = GetParam();
  const unsigned seed = std::random_device()();
  SCOPED_TRACE(absl::StrCat("signal ", sig, ", seed ", seed));
  std::mt19937 rng(seed);
  // Slow steps (3 ms a worker) so that the signals land mid-stream.
  auto cluster =
      Cluster::Start(TestModel("llama"), 4,
                     {"--max-sequences", "16", "--worker-flags", "--debug-step-delay-ms 3"});
  ASSERT_NE(cluster, nullptr);
  std::vector<pid_t> hit;
  RunUnderFire(*cluster, ChaosRequests(32), [&] {
    for (int round = 0; round < 2; ++round) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 500));
      const ClusterAddress victim = PickVictim(*cluster, rng);
      ASSERT_EQ(kill(victim.pid, sig), 0);
      hit.push_back(victim.pid);
      // The coordinator notices (at once for a death, by heartbeat deadline
      // for a stop) and forms a map without it.
      ASSERT_TRUE(cluster->WaitInfo(
          [&](const v1::ModelInfo& info) {
            for (const auto& s : info.layer_map().stages()) {
              if (s.address() == victim.address) return false;
            }
            return info.layer_map().stages_size() == 3 - round;
          },
          10'000));
    }
  });
  const v1::ModelInfo info = cluster->Info();
  EXPECT_GE(info.failovers(), 2u);
  EXPECT_GE(info.layer_map().epoch(), 3u);
  int lost = 0;
  for (const auto& w : info.workers()) lost += w.state() == "lost" ? 1 : 0;
  EXPECT_EQ(lost, 2);
  EXPECT_TRUE(cluster->WaitKvFree(5000));
  for (pid_t p : hit) kill(p, SIGCONT);
}

INSTANTIATE_TEST_SUITE_P(Signals, ChaosTest, ::testing::Values(SIGKILL, SIGSTOP),
                         [](const auto& info) {
                           return std::string(info.param == SIGKILL ? "Sigkill" : "Sigstop");
                         });

// A worker that comes back is taken in again: the map returns to full size.
TEST(FailoverTest, ReadmissionRestoresTheFullMap) {
  auto cluster = Cluster::Start(TestModel("llama"), 4);
  ASSERT_NE(cluster, nullptr);
  const ClusterAddress victim = cluster->workers()[1];
  ASSERT_EQ(kill(victim.pid, SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return i.layer_map().stages_size() == 3; }, 10'000));
  std::mt19937 rng(1);
  RunUnderFire(*cluster, ChaosRequests(4), [] {});
  cluster->StartWorker("worker-1");
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return i.layer_map().stages_size() == 4; }, 10'000));
  const v1::ModelInfo info = cluster->Info();
  for (const auto& w : info.workers()) EXPECT_EQ(w.state(), "serving") << w.worker_id();
  // The loss was a failover; taking a worker in is not one (an alert on
  // failovers fires for losses only).
  EXPECT_EQ(info.failovers(), 1u);
  RunUnderFire(*cluster, ChaosRequests(8), [] {});
}

// When the survivors cannot hold the model, new requests are refused with a
// message saying what is missing, and service resumes when a worker returns.
TEST(FailoverTest, SurvivorsTooSmallRefuseThenRecover) {
  // Each worker can hold about half of the model (its f32 weights are ~0.95
  // MiB) with a 1-sequence, 64-token KV budget.
  const std::vector<std::string> small = {"--capacity", "900KiB", "--reserve", "1B"};
  auto cluster =
      Cluster::Start(TestModel("llama"), 2,
                     {"--max-sequences", "1", "--max-context", "64", "--max-batch-tokens", "16",
                      "--worker-flags", "--capacity 900KiB --reserve 1B"});
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  ASSERT_EQ(Stream(*stub, TextRequest(kPrompts[0], 8)).code, 0);
  ASSERT_EQ(kill(cluster->workers()[0].pid, SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return !i.unavailable_reason().empty(); }, 10'000));
  const StreamResult refused = Stream(*stub, TextRequest(kPrompts[1], 8));
  EXPECT_EQ(refused.code, grpc::StatusCode::UNAVAILABLE) << refused.message;
  EXPECT_NE(refused.message.find("does not fit"), std::string::npos) << refused.message;
  EXPECT_NE(refused.message.find("worker-1"), std::string::npos) << refused.message;
  cluster->StartWorker("worker-0", small);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) {
        return i.unavailable_reason().empty() && i.layer_map().stages_size() == 2;
      },
      10'000));
  const Reference ref = GenerateLocally(TestModel("llama"), kPrompts[1], 8, {}, false, 64);
  const StreamResult ok = Stream(*stub, TextRequest(kPrompts[1], 8));
  ASSERT_EQ(ok.code, 0) << ok.message;
  EXPECT_EQ(ok.tokens, ref.tokens);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// A process of the cluster started by hand, so that the coordinator itself
// can be killed and started again on the same address.
class Proc {
 public:
  Proc(const std::string& log, std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Proc() { Kill(SIGKILL); }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
};

std::string WaitAddress(const std::string& file) {
  for (int i = 0; i < 1000; ++i) {
    std::string a = ReadFile(file);  // "grpc-address metrics-address\n"
    if (!a.empty() && a.back() == '\n') return a.substr(0, a.find(' '));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "no address in " << file;
  return "";
}

// The coordinator dies mid-stream and a new one starts on its address:
// workers register again, the gateway resubmits what was unfinished with the
// tokens already streamed, and every stream completes as if nothing happened.
TEST(FailoverTest, CoordinatorRestartResumesStreams) {
  const std::string& model = TestModel("llama");
  const std::string dir = FreshDir("coordinator-restart");
  const std::string bin = STRATA_BINARY;
  auto coordinator = std::make_unique<Proc>(
      dir + "/coordinator.log",
      std::vector<std::string>{bin, "coordinator", "--model", model, "--workers", "2",
                               "--address-file", dir + "/c.addr"});
  const std::string address = WaitAddress(dir + "/c.addr");
  std::vector<std::unique_ptr<Proc>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(std::make_unique<Proc>(
        absl::StrCat(dir, "/worker-", i, ".log"),
        std::vector<std::string>{bin, "worker", "--id", absl::StrCat("worker-", i), "--coordinator",
                                 address, "--debug-step-delay-ms", "4"}));
  }
  Proc gateway(dir + "/gateway.log",
               {bin, "gateway", "--coordinator", address, "--address-file", dir + "/g.addr"});
  const std::string gw = WaitAddress(dir + "/g.addr");
  auto stub = v1::Generation::NewStub(Dial(gw));

  const std::vector<Request> requests = ChaosRequests(8);
  std::vector<StreamResult> got(requests.size());
  std::vector<std::thread> clients;
  std::atomic<int> done{0};
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      got[i] = Stream(
          *stub,
          TextRequest(requests[i].prompt, requests[i].max_tokens, requests[i].sampling, true),
          120'000);
      ++done;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  coordinator->Kill(SIGKILL);
  EXPECT_EQ(done, 0) << "the streams should still be running when the coordinator dies";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  coordinator = std::make_unique<Proc>(
      dir + "/coordinator.log", std::vector<std::string>{bin, "coordinator", "--model", model,
                                                         "--workers", "2", "--listen", address});
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    const Reference ref = GenerateLocally(model, requests[i].prompt, requests[i].max_tokens,
                                          requests[i].sampling, true);
    ASSERT_EQ(got[i].code, 0) << "stream " << i << ": " << got[i].message << "\n"
                              << ReadFile(dir + "/gateway.log");
    EXPECT_EQ(got[i].tokens, ref.tokens) << "stream " << i;
    EXPECT_EQ(got[i].finished.completion_tokens(), ref.tokens.size());
  }
  gateway.Kill(SIGTERM);
  coordinator->Kill(SIGTERM);
  for (auto& w : workers) w->Kill(SIGTERM);
  const std::string log = ReadFile(dir + "/gateway.log");
  EXPECT_NE(log.find("8 request(s) resubmitted"), std::string::npos) << log;
  EXPECT_NE(ReadFile(dir + "/worker-0.log").find("registering again"), std::string::npos);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

std::string StateOf(const v1::ModelInfo& info, const std::string& id) {
  for (const auto& w : info.workers()) {
    if (w.worker_id() == id) return w.state();
  }
  return "";
}

// A worker that keeps dying is re-admitted only after a back-off.
TEST(FailoverTest, FlappingWorkerBacksOffBeforeReadmission) {
  auto cluster = Cluster::Start(TestModel("llama"), 3);
  ASSERT_NE(cluster, nullptr);
  ASSERT_EQ(kill(cluster->workers()[1].pid, SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return StateOf(i, "worker-1") == "lost"; }, 10'000));
  // First loss: taken back at once.
  pid_t again = cluster->StartWorker("worker-1");
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) {
        return StateOf(i, "worker-1") == "serving" && i.layer_map().stages_size() == 3;
      },
      10'000));
  // Second loss: it may serve again no sooner than 1 s after the loss, even
  // though it registers again at once. (A lower bound: load only delays it.)
  const auto second_loss = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(again, SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return StateOf(i, "worker-1") == "lost"; }, 10'000));
  cluster->StartWorker("worker-1");
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) {
        return StateOf(i, "worker-1") == "serving" && i.layer_map().stages_size() == 3;
      },
      10'000));
  EXPECT_GE(std::chrono::steady_clock::now() - second_loss, std::chrono::milliseconds(1000));
  const v1::ModelInfo info = cluster->Info();
  for (const auto& w : info.workers()) {
    if (w.worker_id() == "worker-1") {
      EXPECT_EQ(w.failures(), 2);
    }
  }
  RunUnderFire(*cluster, ChaosRequests(4), [] {});
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// A rolling restart: every worker in turn gets SIGTERM (it asks to be
// planned out, its sequences move, then it exits 0) and a replacement joins;
// the streams running meanwhile all complete exactly.
TEST(FailoverTest, RollingRestartUnderLoadLosesNothing) {
  auto cluster = Cluster::Start(
      TestModel("llama"), 3,
      {"--worker-flags", "--debug-step-delay-ms 5", "--coordinator-flags", "--admit-delay-ms 100"});
  ASSERT_NE(cluster, nullptr);
  // 5 ms steps: the streams outlast three drains and restarts on a loaded
  // machine.
  RunUnderFire(*cluster, ChaosRequests(16), [&] {
    for (int i = 0; i < 3; ++i) {
      const std::string id = absl::StrCat("worker-", i);
      const pid_t pid = cluster->workers()[i].pid;
      ASSERT_EQ(kill(pid, SIGTERM), 0);
      ASSERT_TRUE(cluster->WaitInfo(
          [&](const v1::ModelInfo& info) {
            for (const auto& w : info.workers()) {
              if (w.worker_id() == id) return w.state() == "drained";
            }
            return false;
          },
          10'000))
          << id;
      // It was planned out, not lost.
      EXPECT_EQ(cluster->Info().layer_map().stages_size(), 2);
      cluster->StartWorker(id);
      ASSERT_TRUE(cluster->WaitInfo(
          [](const v1::ModelInfo& info) { return info.layer_map().stages_size() == 3; }, 10'000))
          << id;
    }
  });
  const v1::ModelInfo info = cluster->Info();
  for (const auto& w : info.workers()) {
    EXPECT_EQ(w.state(), "serving") << w.worker_id();
    EXPECT_EQ(w.failures(), 0) << w.worker_id() << " was drained, not lost";
  }
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// A stage that keeps heartbeating but never finishes a step (a wedged GPU, a
// deadlock) is found by the step watchdog: it is blamed from the workers'
// reported progress, planned out like a dead worker, and every stream
// completes with the tokens of an undisturbed run.
TEST(FailoverTest, StepWatchdogPlansOutAWedgedStage) {
  auto cluster =
      Cluster::Start(TestModel("llama"), 2,
                     {"--coordinator-flags", "--step-watchdog-ms 1000 --admit-delay-ms 100"});
  ASSERT_NE(cluster, nullptr);
  // worker-2 (the last stage once planned in) stalls on its 40th step.
  cluster->StartWorker("worker-2", {"--debug-stall-step", "40"});
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& i) { return i.layer_map().stages_size() == 3; }, 10'000));
  RunUnderFire(*cluster, ChaosRequests(6), [] {});
  auto stub = cluster->coordinator_stub();
  grpc::ClientContext ctx;
  v1::ClusterInfo info;
  ASSERT_TRUE(stub->GetClusterInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.last_failover().worker_id(), "worker-2");
  EXPECT_NE(info.last_failover().cause().find("step watchdog"), std::string::npos)
      << info.last_failover().cause();
  EXPECT_GE(info.model().failovers(), 1u);
  // It heartbeated throughout: only the watchdog could have caught it.
  const std::string log = ReadFile(cluster->log_path() + ".worker-2.log");
  EXPECT_EQ(log.find("no heartbeat"), std::string::npos);
}

}  // namespace
}  // namespace strata::testing
