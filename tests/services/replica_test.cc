// Pipeline replicas with real processes and real signals: requests spread
// over the replicas; a worker stopped in one replica fails over that replica
// alone while the other's streams go on without a pause; a replica that
// loses its only worker hands its sequences to the others. Every stream
// still equals its single-process run.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"

namespace strata::testing {
namespace {

using Clock = std::chrono::steady_clock;

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour", "She opened the door"};

// One stream with the time and map epoch of every delta.
struct Timed {
  StreamResult result;
  std::vector<uint64_t> epochs;
  double longest_gap_s = 0;  // between the request and its first delta, and between deltas
};

Timed TimedStream(Cluster& cluster, const std::string& prompt, int max_tokens) {
  auto stub = cluster.generation();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub->Generate(&ctx, TextRequest(prompt, max_tokens, {}, /*ignore_eos=*/true));
  Timed t;
  v1::GenerateResponse response;
  Clock::time_point last = Clock::now();  // the first gap is the time to the first token
  while (reader->Read(&response)) {
    const auto now = Clock::now();
    if (response.has_delta()) {
      const v1::Delta& d = response.delta();
      t.longest_gap_s =
          std::max(t.longest_gap_s, std::chrono::duration<double>(now - last).count());
      last = now;
      t.epochs.push_back(d.map_epoch());
      t.result.text += d.text();
      t.result.tokens.insert(t.result.tokens.end(), d.token_ids().begin(), d.token_ids().end());
    } else {
      t.result.finished = response.finished();
    }
  }
  const grpc::Status st = reader->Finish();
  t.result.code = st.error_code();
  t.result.message = st.error_message();
  return t;
}

// `n` streams of kPrompts in turn, each on its own thread from the start;
// joined by Join() or, when a test ends early, by the destructor.
class Streams {
 public:
  Streams(Cluster& cluster, int n, int max_tokens) : got_(n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this, &cluster, i, max_tokens] {
        got_[i] = TimedStream(cluster, kPrompts[i % 4], max_tokens);
      });
    }
  }
  ~Streams() { Join(); }
  const std::vector<Timed>& Join() {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
    return got_;
  }

 private:
  std::vector<Timed> got_;
  std::vector<std::thread> threads_;
};

void ExpectLikeTheSingleProcessRun(const Timed& got, const std::string& prompt, int max_tokens,
                                   int i, const std::string& device = "cpu") {
  const Reference ref = GenerateLocally(TestModel("llama"), prompt, max_tokens, {},
                                        /*ignore_eos=*/true, 0, device);
  ASSERT_EQ(got.result.code, 0) << "stream " << i << ": " << got.result.message;
  EXPECT_EQ(got.result.tokens, ref.tokens) << "stream " << i << " lost or repeated tokens";
  EXPECT_EQ(got.result.text, ref.text) << "stream " << i;
}

pid_t PidOf(const Cluster& cluster, const std::string& worker_id) {
  for (int i = 0; i < 8; ++i) {
    if (worker_id == absl::StrCat("worker-", i)) return cluster.workers()[i].pid;
  }
  ADD_FAILURE() << "unknown worker " << worker_id;
  return -1;
}

TEST(ReplicaTest, TwoReplicasShareTheLoadAndOneFailsOverWithoutPausingTheOther) {
  // Slow steps (5 ms a worker) so the streams are long enough to stop a
  // worker under; a stopped worker is noticed after 3 s of silence, a pause
  // no load on this machine makes a healthy stream take.
  auto cluster = Cluster::Start(
      TestModel("llama"), 4,
      {"--replicas", "2", "--max-sequences", "8", "--worker-flags", "--debug-step-delay-ms 5",
       "--coordinator-flags", "--heartbeat-timeout-ms 3000"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo before = cluster->Info();
  ASSERT_EQ(before.replicas_size(), 2);
  ASSERT_EQ(before.replicas(0).stages_size(), 2);
  ASSERT_EQ(before.replicas(1).stages_size(), 2);
  const uint64_t epoch0 = before.replicas(0).epoch();
  const uint64_t epoch1 = before.replicas(1).epoch();
  EXPECT_NE(epoch0, epoch1);  // each replica has its own

  const int n = 8, max_tokens = 150;
  Streams streams(*cluster, n, max_tokens);
  // Both replicas hold sequences: admission spread them.
  bool spread = false;
  for (int tries = 0; tries < 200 && !spread; ++tries) {
    const auto seqs = cluster->WorkerSequences();
    spread = seqs.size() == 4 && !seqs[0].empty() && !seqs[2].empty();
    if (!spread) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(spread) << "the requests all went to one replica";
  // Stop replica 1's last stage mid-stream.
  const std::string victim = before.replicas(1).stages(1).worker_id();
  const pid_t pid = PidOf(*cluster, victim);
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [&](const v1::ModelInfo& info) {
        return info.replicas_size() == 2 && info.replicas(1).epoch() != epoch1 &&
               info.replicas(1).stages_size() == 1;
      },
      20'000))
      << cluster->Info().ShortDebugString();
  const std::vector<Timed>& got = streams.Join();
  kill(pid, SIGCONT);

  const v1::ModelInfo after = cluster->Info();
  EXPECT_EQ(after.replicas(0).epoch(), epoch0) << "replica 0 was re-planned";
  EXPECT_GE(after.failovers(), 1u);
  int on_replica0 = 0, moved = 0;
  for (int i = 0; i < n; ++i) {
    ExpectLikeTheSingleProcessRun(got[i], kPrompts[i % 4], max_tokens, i);
    const bool only0 = std::all_of(got[i].epochs.begin(), got[i].epochs.end(),
                                   [&](uint64_t e) { return e == epoch0; });
    if (only0) {
      ++on_replica0;
      // Replica 0 never waited for replica 1's failover (3 s of silence and
      // a re-plan): its longest gap is a few steps.
      EXPECT_LT(got[i].longest_gap_s, 1.5) << "stream " << i << " on replica 0 paused";
    } else {
      ++moved;
      std::string epochs;
      for (uint64_t e : std::set<uint64_t>(got[i].epochs.begin(), got[i].epochs.end())) {
        absl::StrAppend(&epochs, " ", e);
      }
      EXPECT_GT(got[i].longest_gap_s, 2.0)
          << "stream " << i << " on replica 1 did not pause? epochs" << epochs;
    }
  }
  EXPECT_GT(on_replica0, 0);
  EXPECT_GT(moved, 0);
}

TEST(ReplicaTest, TheLayoutSearchPicksOneReplicaPerWorkerAndALostOneHandsItsSequencesOver) {
  // Three simulated A100s and the default layout (the layout search).
  auto cluster = Cluster::Start(TestModel("llama"), 3,
                                {"--gpus", "sim:a100-40gb*3", "--max-sequences", "8",
                                 "--worker-flags", "--debug-step-delay-ms 5"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo before = cluster->Info();
  // The tiny model fits every GPU: three 1-stage replicas beat a pipeline.
  ASSERT_EQ(before.replicas_size(), 3);
  for (const v1::LayerMap& m : before.replicas()) EXPECT_EQ(m.stages_size(), 1);
  const int n = 9, max_tokens = 120;
  Streams streams(*cluster, n, max_tokens);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string victim = before.replicas(2).stages(0).worker_id();
  ASSERT_EQ(kill(PidOf(*cluster, victim), SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& info) {
        return info.replicas_size() == 3 && info.replicas(2).stages_size() == 0;
      },
      20'000));
  const std::vector<Timed>& got = streams.Join();
  for (int i = 0; i < n; ++i) {
    ExpectLikeTheSingleProcessRun(got[i], kPrompts[i % 4], max_tokens, i, "sim:a100-40gb");
  }
  const std::string logs = cluster->log_dir();
  const std::string log = ReadFile(logs + "/coordinator.log");
  EXPECT_NE(log.find("replica 2 has no map: its "), std::string::npos) << log;
  // New requests go to the replicas left.
  const StreamResult more = Stream(*cluster->generation(), TextRequest("hello", 4));
  EXPECT_EQ(more.code, 0) << more.message;
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

const v1::WorkerHealth* HealthOf(const v1::ModelInfo& info, const std::string& id) {
  for (const v1::WorkerHealth& w : info.workers()) {
    if (w.worker_id() == id) return &w;
  }
  return nullptr;
}

// `strata up --gpus ... --cpu-workers 1`: the GPUs hold the model, so the
// layout search gives them the replicas and the CPU worker stands by. A GPU
// killed under load is replaced by it: its replica serves on, every stream
// completes, and the other replica is not re-planned.
TEST(ReplicaTest, ACpuWorkerStandsByBesideGpusAndReplacesAFailedOne) {
  auto cluster =
      Cluster::Start(TestModel("llama"), 3,
                     {"--gpus", "sim:a100-40gb*2", "--cpu-workers", "1", "--max-sequences", "8",
                      "--worker-flags", "--debug-step-delay-ms 5"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo before = cluster->Info();
  ASSERT_EQ(before.replicas_size(), 2);
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(before.replicas(r).stages_size(), 1);
    EXPECT_EQ(before.replicas(r).stages(0).device(), "sim:a100-40gb");
  }
  const v1::WorkerHealth* cpu = HealthOf(before, "worker-2");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->state(), "standby");
  const std::string logs = cluster->log_dir();
  EXPECT_NE(ReadFile(logs + "/coordinator.log").find("spare(s): worker-2"), std::string::npos);
  EXPECT_NE(ReadFile(logs + "/worker-2.log").find("GB/s and "), std::string::npos)
      << "the CPU worker did not measure its speed";

  const int n = 6, max_tokens = 100;
  Streams streams(*cluster, n, max_tokens);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string victim = before.replicas(1).stages(0).worker_id();
  ASSERT_EQ(kill(PidOf(*cluster, victim), SIGKILL), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& info) {
        return info.replicas_size() == 2 && info.replicas(1).stages_size() == 1 &&
               info.replicas(1).stages(0).worker_id() == "worker-2";
      },
      20'000))
      << cluster->Info().ShortDebugString();
  const std::vector<Timed>& got = streams.Join();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(got[i].result.code, 0) << "stream " << i << ": " << got[i].result.message;
    EXPECT_EQ(got[i].result.tokens.size(), static_cast<size_t>(max_tokens)) << "stream " << i;
  }
  const v1::ModelInfo after = cluster->Info();
  EXPECT_EQ(after.replicas(0).epoch(), before.replicas(0).epoch()) << "replica 0 was re-planned";
  EXPECT_EQ(after.replicas(1).stages(0).device(), "cpu");
  const StreamResult more = Stream(*cluster->generation(), TextRequest("hello", 4));
  EXPECT_EQ(more.code, 0) << more.message;
}

// A GPU too small for the model (a 1B-class shape of 8 layers, 922 MiB, on a
// simulated 0.6 GiB GPU) with two CPU workers: one pipeline of the GPU and
// as few CPU stages as it takes (one), the GPU holding what its memory
// allows; the second CPU worker stands by.
// Llama 1B's shape cut to 8 layers, zero weights in sparse files, in a fresh
// folder named `name` (empty when it cannot be made).
std::string ZeroLlama1b8(const std::string& name) {
  const std::string model = FreshDir(name);
  ModelSpec spec;
  spec.size = "1b";
  spec.init = "zeros";
  spec.layers = 8;
  const absl::Status made = MakeModel(spec, model);
  EXPECT_TRUE(made.ok()) << made;
  return made.ok() ? model : "";
}

TEST(ReplicaTest, CpuWorkersTakeTheLayersASmallGpuCannotHold) {
  const std::string model = ZeroLlama1b8("llama1b8-zeros");
  ASSERT_FALSE(model.empty());
  auto cluster = Cluster::Start(
      model, 3,
      {"--gpus", "sim:custom", "--cpu-workers", "2", "--max-sequences", "2", "--max-context", "256",
       "--worker-flags", "--sim-memory 0.6GiB --sim-bandwidth 300e9 --sim-flops 30e12"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo info = cluster->Info();
  ASSERT_EQ(info.replicas_size(), 1);
  const v1::LayerMap& map = info.layer_map();
  ASSERT_EQ(map.stages_size(), 2) << map.ShortDebugString();
  EXPECT_EQ(map.stages(0).worker_id(), "worker-0");
  EXPECT_EQ(map.stages(0).device(), "sim:custom");
  EXPECT_NE(map.stages(0).reason().find("memory"), std::string::npos) << map.ShortDebugString();
  EXPECT_EQ(map.stages(1).device(), "cpu");
  EXPECT_GT(map.stages(0).layer_end(), 1) << "the GPU should hold what it can";
  const std::string spare = map.stages(1).worker_id() == "worker-1" ? "worker-2" : "worker-1";
  const v1::WorkerHealth* standby = HealthOf(info, spare);
  ASSERT_NE(standby, nullptr);
  EXPECT_EQ(standby->state(), "standby");
  const std::string log = ReadFile(cluster->log_dir() + "/coordinator.log");
  EXPECT_NE(log.find("the GPUs alone cannot hold the model"), std::string::npos) << log;
  EXPECT_NE(log.find("1 CPU worker(s) join the 1 GPU(s)"), std::string::npos) << log;
  const StreamResult got = Stream(*cluster->generation(), TextRequest("hello", 4, {}, true));
  EXPECT_EQ(got.code, 0) << got.message;
  EXPECT_EQ(got.tokens.size(), 4u);
}

// Planned for long prompts (--plan-prompt-tokens), a pipeline's cuts balance
// prefill: the last stage, whose LM head decode reads whole every step, takes
// its share of the layers, and says why; it serves as before.
TEST(ReplicaTest, APipelinePlannedForLongPromptsEvensOutItsLayers) {
  const std::string model = ZeroLlama1b8("llama1b8-zeros-load");
  ASSERT_FALSE(model.empty());
  auto layers_of = [](const v1::LayerMap& map) {
    std::vector<int> out;
    for (const v1::StageInfo& s : map.stages()) out.push_back(s.layer_end() - s.layer_begin());
    return out;
  };
  const std::vector<std::string> common = {
      "--gpus", "sim:a100-40gb*4",    "--replicas", "1", "--max-sequences", "8", "--max-context",
      "1100",   "--max-batch-tokens", "2048"};
  std::vector<int> by_bytes;
  {
    auto cluster = Cluster::Start(model, 4, common);
    ASSERT_NE(cluster, nullptr);
    by_bytes = layers_of(cluster->Info().layer_map());
  }
  std::vector<std::string> flags = common;
  flags.insert(flags.end(),
               {"--coordinator-flags", "--plan-prompt-tokens 1024 --plan-output-tokens 4"});
  auto cluster = Cluster::Start(model, 4, flags);
  ASSERT_NE(cluster, nullptr);
  const v1::LayerMap map = cluster->Info().layer_map();
  const std::vector<int> for_load = layers_of(map);
  ASSERT_EQ(by_bytes.size(), 4u);
  EXPECT_LT(by_bytes.back(), 2) << "decode's cuts give the head's stage fewer layers";
  EXPECT_EQ(for_load, (std::vector<int>{2, 2, 2, 2})) << map.ShortDebugString();
  EXPECT_NE(map.stages(3).reason().find("planned for 1024-token prompts"), std::string::npos)
      << map.ShortDebugString();
  const StreamResult got = Stream(*cluster->generation(), TextRequest("hello", 4, {}, true));
  EXPECT_EQ(got.code, 0) << got.message;
  EXPECT_EQ(got.tokens.size(), 4u);
}

// A GPU that joins a serving cluster whose replicas are whole forms one
// more replica (here of one stage), which then takes its share of new
// requests; its streams equal one simulated GPU's.
TEST(ReplicaTest, AGpuThatJoinsLaterFormsAnotherReplica) {
  // 5 ms steps, so the six streams overlap and admission spreads them: on
  // the tiny model each could otherwise end before the next arrives, and
  // every one would go to replica 0 (a tie goes to the first).
  auto cluster =
      Cluster::Start(TestModel("llama"), 2,
                     {"--gpus", "sim:a100-40gb*2", "--coordinator-flags", "--admit-delay-ms 100",
                      "--worker-flags", "--debug-step-delay-ms 5"});
  ASSERT_NE(cluster, nullptr);
  ASSERT_EQ(cluster->Info().replicas_size(), 2);
  cluster->StartWorker("worker-2", {"--device", "sim:a100-40gb", "--debug-step-delay-ms", "5"});
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& info) {
        return info.replicas_size() == 3 && info.replicas(2).stages_size() == 1 &&
               info.replicas(2).stages(0).worker_id() == "worker-2";
      },
      20'000))
      << cluster->Info().ShortDebugString();
  const std::string log = ReadFile(cluster->log_dir() + "/coordinator.log");
  EXPECT_NE(log.find("spare worker(s) worker-2 form replica 2"), std::string::npos) << log;
  const int n = 6, max_tokens = 24;
  Streams streams(*cluster, n, max_tokens);
  const std::vector<Timed>& got = streams.Join();
  for (int i = 0; i < n; ++i) {
    ExpectLikeTheSingleProcessRun(got[i], kPrompts[i % 4], max_tokens, i, "sim:a100-40gb");
  }
  grpc::ClientContext ctx;
  v1::WorkerStatus st;
  const std::string address = cluster->Info().replicas(2).stages(0).address();
  ASSERT_TRUE(cluster->worker_stub(address)->GetStatus(&ctx, {}, &st).ok());
  EXPECT_GT(st.steps(), 0u) << "the new replica served nothing";
}

// A pipeline of three simulated GPUs of one host moves its hidden states by
// the socket peer group, as CUDA workers do by NCCL, so the gRPC steps carry
// headers only. A stage killed under load breaks its hops at once; one
// stopped leaves its neighbours waiting on it until the coordinator, seeing
// no heartbeat, re-plans and aborts their group. Either way the two
// survivors form a new group and every stream still equals one simulated
// GPU's run.
class SocketHopTest : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(SocketHopTest, SimulatedGpusHopBySocketAndSurviveALostStage) {
  const auto [signal, stage] = GetParam();
  auto cluster = Cluster::Start(TestModel("llama"), 3,
                                {"--gpus", "sim:a100-40gb*3", "--replicas", "1", "--max-sequences",
                                 "8", "--worker-flags", "--debug-step-delay-ms 5"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo before = cluster->Info();
  ASSERT_EQ(before.replicas_size(), 1);
  ASSERT_EQ(before.replicas(0).stages_size(), 3);
  const std::string logs = cluster->log_dir();
  EXPECT_NE(ReadFile(logs + "/coordinator.log")
                .find("3 workers move hidden states by socket (simulated GPUs)"),
            std::string::npos)
      << ReadFile(logs + "/coordinator.log");

  const int n = 6, max_tokens = 100;
  Streams streams(*cluster, n, max_tokens);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The middle stage's hidden states came by the peer group, and its byte
  // counters count them (they read 0 when only gRPC steps were counted).
  const std::string middle =
      HttpGet(cluster->metrics_of(before.replicas(0).stages(1).worker_id()), "/metrics");
  EXPECT_GT(Sample(middle, "strata_worker_received_bytes_total"), 0) << middle;
  EXPECT_GT(Sample(middle, "strata_worker_sent_bytes_total"), 0) << middle;
  const pid_t victim = PidOf(*cluster, before.replicas(0).stages(stage).worker_id());
  ASSERT_EQ(kill(victim, signal), 0);
  ASSERT_TRUE(cluster->WaitInfo(
      [](const v1::ModelInfo& info) {
        return info.replicas_size() == 1 && info.replicas(0).stages_size() == 2;
      },
      20'000))
      << cluster->Info().ShortDebugString();
  const std::vector<Timed>& got = streams.Join();
  int spanning = 0;  // streams with tokens from both maps: the loss came mid-stream
  for (int i = 0; i < n; ++i) {
    ExpectLikeTheSingleProcessRun(got[i], kPrompts[i % 4], max_tokens, i, "sim:a100-40gb");
    spanning += !got[i].epochs.empty() && got[i].epochs.front() != got[i].epochs.back();
  }
  EXPECT_GT(spanning, 0) << "no stream was in flight when the stage was lost";
  EXPECT_NE(ReadFile(logs + "/coordinator.log")
                .find("2 workers move hidden states by socket (simulated GPUs)"),
            std::string::npos)
      << ReadFile(logs + "/coordinator.log");
}

INSTANTIATE_TEST_SUITE_P(Signals, SocketHopTest,
                         ::testing::Values(std::make_pair(SIGKILL, 1), std::make_pair(SIGSTOP, 0),
                                           std::make_pair(SIGSTOP, 2)),
                         [](const auto& info) {
                           return absl::StrCat(info.param.first == SIGKILL ? "Sigkill" : "Sigstop",
                                               "Stage", info.param.second);
                         });

// Without --replicas, CPU workers of one host form one pipeline: replicas
// of them would share the same cores and memory bandwidth.
TEST(ReplicaTest, CpuWorkersOfOneHostFormOnePipelineByDefault) {
  auto cluster = Cluster::Start(TestModel("llama"), 2, {});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo info = cluster->Info();
  EXPECT_EQ(info.replicas_size(), 1);
  EXPECT_EQ(info.layer_map().stages_size(), 2);
  const std::string log = ReadFile(cluster->log_dir() + "/coordinator.log");
  EXPECT_NE(log.find("CPU workers of one host"), std::string::npos) << log;
}

TEST(ReplicaTest, BadReplicaFlagsAreRefused) {
  std::string out;
  EXPECT_NE(RunCommand(std::string(STRATA_BINARY) + " coordinator --replicas -1 2>&1", &out), 0);
  EXPECT_NE(out.find("--replicas"), std::string::npos) << out;
  EXPECT_NE(
      RunCommand(std::string(STRATA_BINARY) + " coordinator --replicas 2 --layers 0-1,2-3 2>&1",
                 &out),
      0);
  EXPECT_NE(out.find("--layers: a manual split needs --replicas 1"), std::string::npos) << out;
  EXPECT_NE(RunCommand(std::string(STRATA_BINARY) + " up --workers 2 --cpu-workers 1 2>&1", &out),
            0);
  EXPECT_NE(out.find("--cpu-workers: adds CPU workers beside --gpus"), std::string::npos) << out;
  EXPECT_NE(
      RunCommand(std::string(STRATA_BINARY) + " up --gpus sim:a100-40gb*2 --cpu-workers -1 2>&1",
                 &out),
      0);
  EXPECT_NE(out.find("--cpu-workers"), std::string::npos) << out;
  EXPECT_NE(RunCommand(std::string(STRATA_BINARY) +
                           " worker --coordinator 127.0.0.1:1 --bandwidth -5 2>&1",
                       &out),
            0);
  EXPECT_NE(out.find("--bandwidth, --flops"), std::string::npos) << out;
}

}  // namespace
}  // namespace strata::testing
