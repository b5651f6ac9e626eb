// Attacks on a live cluster (`strata up`: real processes on loopback), as
// someone on the same network would try them with the generated C++ stubs:
// a fake worker, forged Loads, injected steps, ghost registrations, a session
// that floods the queue. Under mutual TLS (the default) each one is refused
// (a failed handshake, PERMISSION_DENIED or RESOURCE_EXHAUSTED) while
// concurrent clients stream exactly the tokens of an undisturbed run. With
// --insecure, the tests record what an open cluster still refuses (the
// session and hop tokens) and what it allows (any process may register).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "services/common/certs.h"
#include "services/common/server.h"
#include "services/common/tls.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

using Clock = std::chrono::steady_clock;

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour", "She opened the door"};

std::shared_ptr<const TransportSecurity> Identity(const std::string& dir, const std::string& name) {
  auto s = TransportSecurity::Mutual(
      {dir + "/" + name + ".crt", dir + "/" + name + ".key", dir + "/ca.crt"});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : TransportSecurity::Insecure();
}

void Deadline(grpc::ClientContext* ctx, int ms = 5000) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// Opens Coordinator.Attach as `worker_id`; the status the stream ends with
// (OK and `*registered` when the coordinator took it).
grpc::Status AttachAs(const std::string& coordinator, const TransportSecurity* security,
                      const std::string& worker_id, bool* registered = nullptr) {
  auto stub = v1::Coordinator::NewStub(Dial(coordinator, security));
  grpc::ClientContext ctx;
  Deadline(&ctx);
  auto stream = stub->Attach(&ctx);
  v1::WorkerMessage reg;
  reg.mutable_register_()->set_worker_id(worker_id);
  reg.mutable_register_()->set_address("127.0.0.1:9");
  reg.mutable_register_()->mutable_device()->set_name("cpu");
  reg.mutable_register_()->mutable_device()->set_capacity_bytes(int64_t{64} << 30);
  v1::CoordinatorMessage reply;
  const bool took = stream->Write(reg) && stream->Read(&reply) && reply.has_registered();
  if (registered != nullptr) *registered = took;
  if (took) {
    ctx.TryCancel();  // leave at once: a ghost
    stream->Finish().IgnoreError();
    return grpc::Status::OK;
  }
  stream->WritesDone();
  return stream->Finish();
}

// A Load that would hijack a worker: an epoch from the future, the next hop
// through a proxy, a KV cache of 2^24 sequences, a folder of the host.
grpc::Status ForgedLoad(const std::string& worker, const TransportSecurity* security,
                        const std::string& session_token = "") {
  auto stub = v1::Worker::NewStub(Dial(worker, security));
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::LoadRequest req;
  req.set_epoch(999);
  req.set_model_dir("/etc");
  req.set_layer_begin(0);
  req.set_layer_end(2);
  req.set_next_address("127.0.0.1:9");
  req.set_max_sequences(int64_t{1} << 24);
  req.set_max_context(4096);
  req.set_max_batch_tokens(512);
  req.set_session_token(session_token);
  v1::LoadResponse resp;
  return stub->Load(&ctx, req, &resp);
}

// 17 prefills of 16 tokens, as if from the previous stage.
grpc::Status InjectPrefills(const std::string& worker, const TransportSecurity* security,
                            uint64_t epoch) {
  auto stub = v1::Worker::NewStub(Dial(worker, security));
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::ForwardSummary summary;
  auto writer = stub->Forward(&ctx, &summary);
  for (int i = 0; i < 17; ++i) {
    v1::Step step;
    step.set_step_id(1'000'000 + i);
    step.set_epoch(epoch);
    v1::Chunk* c = step.add_chunks();
    c->set_seq_id(900'000 + i);
    for (int t = 0; t < 16; ++t) c->add_token_ids(5);
    c->set_sample(true);
    step.set_hidden(std::string(16 * 64 * 4, '\0'));
    if (!writer->Write(step)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status ReleaseAll(const std::string& worker, const TransportSecurity* security) {
  auto stub = v1::Worker::NewStub(Dial(worker, security));
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::ReleaseRequest req;
  req.set_all(true);
  v1::ReleaseResponse resp;
  return stub->Release(&ctx, req, &resp);
}

// Submits `n` one-token requests over a Session; returns how many came back
// RESOURCE_EXHAUSTED (every one must come back), or the stream's error.
grpc::Status Flood(const std::string& coordinator, const TransportSecurity* security, int n,
                   int* exhausted) {
  auto stub = v1::Coordinator::NewStub(Dial(coordinator, security));
  grpc::ClientContext ctx;
  Deadline(&ctx, 60'000);
  auto stream = stub->Session(&ctx);
  for (int i = 1; i <= n; ++i) {
    v1::GatewayMessage m;
    m.mutable_submit()->set_request_id(i);
    m.mutable_submit()->add_prompt_ids(1);
    m.mutable_submit()->add_prompt_ids(5);
    m.mutable_submit()->set_max_tokens(1);
    if (!stream->Write(m)) break;
  }
  std::set<uint64_t> answered;
  v1::SessionEvents batch;
  *exhausted = 0;
  while (static_cast<int>(answered.size()) < n && stream->Read(&batch)) {
    for (const v1::SessionEvent& e : batch.events()) {
      if (e.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++*exhausted;
      if (e.error_code() != 0 || e.finish() != v1::FINISH_REASON_UNSPECIFIED) {
        answered.insert(e.request_id());
      }
    }
  }
  if (static_cast<int>(answered.size()) == n) {
    ctx.TryCancel();
    stream->Finish().IgnoreError();
    return grpc::Status::OK;
  }
  stream->WritesDone();
  return stream->Finish();
}

// Streams every prompt at once while `attack` runs; each must give the
// tokens of its single-process run.
void StreamThrough(Cluster& cluster, const std::function<void()>& attack) {
  std::vector<StreamResult> got(8);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < got.size(); ++i) {
    clients.emplace_back([&, i] {
      got[i] = Stream(*cluster.generation(), TextRequest(kPrompts[i % 4], 48, {}, true), 120'000);
    });
  }
  attack();
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < got.size(); ++i) {
    const Reference ref = GenerateLocally(TestModel("llama"), kPrompts[i % 4], 48, {}, true);
    ASSERT_EQ(got[i].code, 0) << got[i].message;
    EXPECT_EQ(got[i].tokens, ref.tokens) << "stream " << i << " was changed";
  }
}

// The listening TCP ports of `pid`, from /proc.
std::set<int> ListeningPorts(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
  for (int fd = 0; fd < 1024; ++fd) {
    char target[256] = {};
    const std::string link = absl::StrCat(fd_dir, "/", fd);
    const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target).rfind("socket:[", 0) == 0) {
      inodes.insert(std::string(target + 8, n - 9));
    }
  }
  std::set<int> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream f(table);
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (cols.size() < 10 || cols[3] != "0A" || inodes.count(cols[9]) == 0) continue;  // LISTEN
      const std::string local = cols[1];
      int port = 0;
      if (absl::SimpleHexAtoi(local.substr(local.find(':') + 1), &port)) ports.insert(port);
    }
  }
  return ports;
}

int PortOf(const std::string& address) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
  return port;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = Cluster::Start(TestModel("llama"), 2,
                              {"--coordinator-flags", "--max-queued 32", "--worker-flags",
                               "--debug-step-delay-ms 2"})
                   .release();
    if (cluster_ == nullptr) return;
    // A CA nobody in the cluster trusts, with a worker certificate of its own.
    rogue_dir_ = new std::string(FreshDir("rogue-ca"));
    ASSERT_TRUE(
        MakeCertificates(*rogue_dir_, {{Role::kWorker, "worker-0"}}, {"127.0.0.1"}, 1).ok());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (cluster_ == nullptr) GTEST_SKIP() << "the cluster did not start";
  }
  static Cluster* cluster_;
  static std::string* rogue_dir_;
};
Cluster* SecurityTest::cluster_ = nullptr;
std::string* SecurityTest::rogue_dir_ = nullptr;

TEST_F(SecurityTest, EveryAttackIsRefusedWhileClientsStreamUnchanged) {
  Cluster& c = *cluster_;
  const std::string certs = c.cert_dir();
  ASSERT_FALSE(certs.empty()) << "strata up runs mutual TLS by default";
  const auto op = Identity(certs, "operator");
  const auto worker0 = Identity(certs, "worker-0");
  const auto gateway = Identity(certs, "gateway");
  const auto rogue = Identity(*rogue_dir_, "worker-0");
  const std::string w0 = c.workers()[0].address, w1 = c.workers()[1].address;
  const v1::ModelInfo before = c.Info();
  ASSERT_EQ(before.layer_map().stages_size(), 2);

  StreamThrough(c, [&] {
    // A fake worker: without a certificate, with one from another CA, with
    // a certificate of another role, or under a name not its own.
    EXPECT_EQ(AttachAs(c.coordinator(), nullptr, "zz-evil").error_code(),
              grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(AttachAs(c.coordinator(), rogue.get(), "zz-evil").error_code(),
              grpc::StatusCode::UNAVAILABLE);
    const grpc::Status as_operator = AttachAs(c.coordinator(), op.get(), "zz-evil");
    EXPECT_EQ(as_operator.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << as_operator.error_message();
    const grpc::Status impostor = AttachAs(c.coordinator(), worker0.get(), "zz-evil");
    EXPECT_EQ(impostor.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << impostor.error_message();
    EXPECT_NE(impostor.error_message().find("zz-evil"), std::string::npos);

    // Forged Loads (a man in the middle, an epoch from the future, a KV
    // cache of 2^24 sequences, /etc): only the coordinator may load, and only
    // with the worker's session token.
    for (const auto* who : {op.get(), worker0.get(), gateway.get()}) {
      const grpc::Status load = ForgedLoad(w1, who);
      EXPECT_EQ(load.error_code(), grpc::StatusCode::PERMISSION_DENIED) << load.error_message();
    }
    EXPECT_EQ(ForgedLoad(w1, nullptr).error_code(), grpc::StatusCode::UNAVAILABLE);

    // Injected prefills to fill the KV cache, from a role that may not
    // forward, and from worker-0 (the real previous stage) without this
    // epoch's hop token.
    const grpc::Status injected = InjectPrefills(w1, op.get(), before.layer_map().epoch());
    EXPECT_EQ(injected.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << injected.error_message();
    const grpc::Status no_token = InjectPrefills(w1, worker0.get(), before.layer_map().epoch());
    EXPECT_EQ(no_token.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << no_token.error_message();
    EXPECT_NE(no_token.error_message().find("hop token"), std::string::npos);
    EXPECT_EQ(ReleaseAll(w0, op.get()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(ReleaseAll(w0, nullptr).error_code(), grpc::StatusCode::UNAVAILABLE);

    // 100 ghost registrations: not one handshake completes.
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(AttachAs(c.coordinator(), nullptr, absl::StrCat("ghost-", i)).error_code(),
                grpc::StatusCode::UNAVAILABLE);
    }

    // Sessions are for gateways; a stolen gateway certificate still meets the
    // coordinator's own queue bound.
    int exhausted = 0;
    EXPECT_EQ(Flood(c.coordinator(), op.get(), 10, &exhausted).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    const grpc::Status flood = Flood(c.coordinator(), gateway.get(), 2000, &exhausted);
    EXPECT_TRUE(flood.ok()) << flood.error_message();
    EXPECT_GT(exhausted, 0) << "--max-queued 32 bounds a session's submissions";
  });

  // Nothing moved: same map, same epoch, no failover, no ghost in the registry.
  const v1::ModelInfo after = c.Info();
  EXPECT_EQ(after.layer_map().epoch(), before.layer_map().epoch());
  EXPECT_EQ(after.failovers(), 0u);
  EXPECT_EQ(after.workers_size(), 2);
  // The worker never loaded anything it was not told to by the coordinator.
  auto status_stub = c.worker_stub(w1);
  grpc::ClientContext ctx;
  v1::WorkerStatus status;
  ASSERT_TRUE(status_stub->GetStatus(&ctx, {}, &status).ok());
  EXPECT_EQ(status.epoch(), before.layer_map().epoch());
  EXPECT_EQ(status.steps() > 0, true);
  EXPECT_TRUE(c.WaitKvFree(10'000));
}

// Only the coordinator (and operators) may read the cluster's internals;
// the gateway's public answer has no folder and no address.
TEST_F(SecurityTest, ClusterInfoIsForOperatorsAndTheGatewayShowsNoInternals) {
  Cluster& c = *cluster_;
  const auto worker0 = Identity(c.cert_dir(), "worker-0");
  auto stub = v1::Coordinator::NewStub(Dial(c.coordinator(), worker0.get()));
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::ClusterInfo info;
  EXPECT_EQ(stub->GetClusterInfo(&ctx, {}, &info).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  auto plain = v1::Coordinator::NewStub(Dial(c.coordinator()));
  grpc::ClientContext ctx2;
  Deadline(&ctx2);
  EXPECT_EQ(plain->GetClusterInfo(&ctx2, {}, &info).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext ctx3;
  v1::ModelInfo pub;
  ASSERT_TRUE(c.generation()->GetModelInfo(&ctx3, {}, &pub).ok());
  EXPECT_EQ(pub.model().find('/'), std::string::npos);
  EXPECT_EQ(pub.DebugString().find("127.0.0.1"), std::string::npos) << pub.DebugString();
}

// Each server listens on the port it advertises (and its metrics port), and
// a port already taken is a clear error, never a port shared with another
// process.
TEST_F(SecurityTest, ServersListenOnlyWhereTheyAdvertiseAndNeverShareAPort) {
  Cluster& c = *cluster_;
  for (const char* role : {"coordinator", "gateway", "worker-0"}) {
    const std::string address = role == std::string("coordinator") ? c.coordinator()
                                : role == std::string("gateway")   ? c.gateway()
                                                                   : c.workers()[0].address;
    const std::set<int> want = {PortOf(address), PortOf(c.metrics_of(role))};
    EXPECT_EQ(ListeningPorts(c.pid_of(role)), want) << role;
  }
  std::string out;
  const int rc =
      RunCommand(absl::StrCat(STRATA_BINARY, " coordinator --model ", TestModel("llama"),
                              " --listen ", c.coordinator(), " --startup-timeout-ms 2000"),
                 &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("cannot bind " + c.coordinator()), std::string::npos) << out;
}

// An open cluster (--insecure) lets any process register as a worker, but
// the session and hop tokens still keep strangers from loading a worker or
// feeding it steps.
TEST(InsecureClusterTest, AnyoneMayRegisterButNotLoadOrForward) {
  auto c = Cluster::Start(TestModel("llama"), 2, {"--insecure"});
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->cert_dir().empty());
  const std::string w1 = c->workers()[1].address;
  StreamThrough(*c, [&] {
    bool registered = false;
    EXPECT_TRUE(AttachAs(c->coordinator(), nullptr, "zz-evil", &registered).ok());
    EXPECT_TRUE(registered) << "an insecure coordinator takes any worker";
    const grpc::Status load = ForgedLoad(w1, nullptr, "guessed-token");
    EXPECT_EQ(load.error_code(), grpc::StatusCode::PERMISSION_DENIED) << load.error_message();
    EXPECT_NE(load.error_message().find("session_token"), std::string::npos);
    const grpc::Status injected = InjectPrefills(w1, nullptr, c->Info().layer_map().epoch());
    EXPECT_EQ(injected.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << injected.error_message();
    EXPECT_EQ(ReleaseAll(w1, nullptr).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  });
  // The ghost left before it could be planned in: no re-plan, no failover.
  const v1::ModelInfo info = c->Info();
  EXPECT_EQ(info.layer_map().epoch(), 1u);
  EXPECT_EQ(info.failovers(), 0u);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// Registrations are rate-limited, ghosts that leave before they are planned
// in cost no re-plan and no failover, and lost workers outside the map are
// forgotten after --prune-after-ms.
TEST(InsecureClusterTest, GhostRegistrationsAreRateLimitedAndPruned) {
  auto c = Cluster::Start(
      TestModel("llama"), 2,
      {"--insecure", "--coordinator-flags", "--registrations-per-minute 6 --prune-after-ms 300"});
  ASSERT_NE(c, nullptr);
  int taken = 0, limited = 0;
  for (int i = 0; i < 12; ++i) {
    bool registered = false;
    const grpc::Status st =
        AttachAs(c->coordinator(), nullptr, absl::StrCat("ghost-", i), &registered);
    taken += registered ? 1 : 0;
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++limited;
      EXPECT_NE(st.error_message().find("try again"), std::string::npos) << st.error_message();
    }
  }
  // The two workers took 2 of the 6; a few tokens trickle back meanwhile.
  EXPECT_GE(taken, 4);
  EXPECT_LE(taken, 5);
  EXPECT_EQ(taken + limited, 12);
  // The ghosts are forgotten; the map never moved.
  EXPECT_TRUE(c->WaitInfo([](const v1::ModelInfo& i) { return i.workers_size() == 2; }, 10'000))
      << c->Info().DebugString();
  const v1::ModelInfo info = c->Info();
  EXPECT_EQ(info.layer_map().epoch(), 1u);
  EXPECT_EQ(info.failovers(), 0u);
  EXPECT_EQ(Stream(*c->generation(), TextRequest(kPrompts[0], 4)).code, 0);
}

}  // namespace
}  // namespace strata::testing
