// The coordinator's worker registry as plain logic: who may register, the
// back-off of a flapping worker, who a plan may use, and when a lost worker
// is forgotten. (The cluster tests drive it through real workers.)
#include "services/coordinator/worker_registry.h"

#include "gtest/gtest.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

v1::Register Reg(const std::string& id) {
  v1::Register r;
  r.set_worker_id(id);
  r.set_address("127.0.0.1:1");
  return r;
}

TEST(WorkerRegistryTest, RegistrationsAreCheckedAndRateLimited) {
  CoordinatorOptions o;
  o.registrations_per_minute = 2;
  WorkerRegistry r(o);
  const auto t0 = Clock::now();
  const Identity w0{Role::kWorker, "w0"};
  auto refused = r.Register(Reg(""), w0, false, false, nullptr, "t", t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("worker_id and address"), std::string::npos);
  // Under mutual TLS the id must be the certificate's name.
  refused = r.Register(Reg("w1"), w0, /*mutual=*/true, false, nullptr, "t", t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(r.Register(Reg("w0"), w0, true, false, nullptr, "t", t0).has_value());
  // The same id again while attached (that spends the bucket's last token),
  // then once more: the rate limit.
  refused = r.Register(Reg("w0"), w0, false, false, nullptr, "t", t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("already attached"), std::string::npos);
  refused = r.Register(Reg("w0"), w0, false, false, nullptr, "t", t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A minute later the bucket is full again: now the id itself is refused.
  refused = r.Register(Reg("w0"), w0, false, false, nullptr, "t", t0 + milliseconds(60'000));
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("already attached"), std::string::npos);
  refused =
      r.Register(Reg("w2"), w0, false, /*draining=*/true, nullptr, "t", t0 + milliseconds(60'000));
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("draining"), std::string::npos);
  EXPECT_EQ(r.workers().size(), 1u);
  EXPECT_EQ(r.Find("w0")->session_token, "t");
}

TEST(WorkerRegistryTest, LossesBackOffAndEligibilityWaitsForTheAdmitDelay) {
  CoordinatorOptions o;
  o.admit_delay_ms = 1000;
  o.prune_after_ms = 5000;
  WorkerRegistry r(o);
  const auto t0 = Clock::now();
  int token = 0;
  ASSERT_FALSE(r.Register(Reg("a"), {}, false, false, nullptr, "t", t0).has_value());
  ASSERT_FALSE(r.Register(Reg("b"), {}, false, false,
                          reinterpret_cast<grpc::ServerContext*>(&token), "t", t0)
                   .has_value());
  auto nothing_in_map = [](const std::string&) { return false; };
  // Before the first map every attached worker counts; after it, only those
  // attached for the admit delay.
  EXPECT_EQ(r.Eligible(nothing_in_map, false, t0).size(), 2u);
  EXPECT_TRUE(r.Eligible(nothing_in_map, true, t0).empty());
  EXPECT_EQ(r.Eligible(nothing_in_map, true, t0 + milliseconds(1000)).size(), 2u);
  // Only the attach call that owns a record may touch it.
  EXPECT_EQ(r.Owned("b", nullptr), nullptr);
  EXPECT_NE(r.Owned("b", reinterpret_cast<grpc::ServerContext*>(&token)), nullptr);
  // Losses: no back-off the first time, then 1 s, 2 s, 4 s...
  WorkerRecord& a = *r.Find("a");
  EXPECT_TRUE(r.Lose(a, t0));
  EXPECT_FALSE(r.Lose(a, t0));  // lost already
  EXPECT_STREQ(WorkerRegistry::State(a, false, t0), "lost");
  for (int64_t expected_ms : {1000, 2000, 4000}) {
    ASSERT_FALSE(r.Register(Reg("a"), {}, false, false, nullptr, "t", t0).has_value());
    EXPECT_TRUE(r.Lose(a, t0));
    a.connected = true;  // as if back at once
    EXPECT_STREQ(WorkerRegistry::State(a, false, t0), "backoff");
    EXPECT_STREQ(WorkerRegistry::State(a, false, t0 + milliseconds(expected_ms)), "standby");
    EXPECT_STREQ(WorkerRegistry::State(a, true, t0 + milliseconds(expected_ms)), "serving");
    a.connected = false;
  }
  // A lost worker is forgotten after prune_after_ms, unless kept.
  r.Prune([](const std::string& id) { return id == "a"; }, t0 + milliseconds(60'000));
  EXPECT_NE(r.Find("a"), nullptr);
  r.Prune(nothing_in_map, t0 + milliseconds(4000));
  EXPECT_NE(r.Find("a"), nullptr);
  r.Prune(nothing_in_map, t0 + milliseconds(6000));
  EXPECT_EQ(r.Find("a"), nullptr);
  EXPECT_NE(r.Find("b"), nullptr);  // connected: never pruned
}

v1::Device Device(const std::string& name, const std::string& host, double bandwidth,
                  double flops) {
  v1::Device d;
  d.set_name(name);
  d.set_host(host);
  d.set_capacity_bytes(int64_t{8} << 30);
  d.set_bandwidth(bandwidth);
  d.set_flops(flops);
  return d;
}

TEST(PlannerDevicesTest, CpuWorkersOfOneHostBesideGpusShareItsBandwidth) {
  // Two CPU workers on host a, one on host b, after a GPU: a's two split
  // its 20 GB/s and 1 TFLOP/s; b's keeps its own.
  const std::vector<DeviceSpec> specs =
      PlannerDevices({{"g", Device("sim:a100-40gb", "a", 1.555e12, 312e12)},
                      {"c0", Device("cpu", "a", 20e9, 1e12)},
                      {"c1", Device("cpu", "a", 20e9, 1e12)},
                      {"c2", Device("cpu", "b", 20e9, 1e12)}});
  ASSERT_EQ(specs.size(), 4u);
  EXPECT_EQ(specs[0].name, "g/sim:a100-40gb");
  EXPECT_DOUBLE_EQ(specs[0].bandwidth, 1.555e12);
  EXPECT_DOUBLE_EQ(specs[1].bandwidth, 10e9);
  EXPECT_DOUBLE_EQ(specs[2].flops, 0.5e12);
  EXPECT_DOUBLE_EQ(specs[3].bandwidth, 20e9);
  // Speeds follow the bandwidths when GPUs and CPUs mix.
  EXPECT_DOUBLE_EQ(specs[1].speed * 2, specs[3].speed);
  EXPECT_GT(specs[0].speed, 50 * specs[3].speed);
}

TEST(PlannerDevicesTest, WorkersOfOneKindKeepTheirSpeeds) {
  v1::Device a = Device("cpu", "a", 20e9, 1e12), b = a;
  b.set_speed(0.5);
  const std::vector<DeviceSpec> specs = PlannerDevices({{"c0", a}, {"c1", b}});
  EXPECT_DOUBLE_EQ(specs[0].speed, 1.0);
  EXPECT_DOUBLE_EQ(specs[1].speed, 0.5);
  EXPECT_DOUBLE_EQ(specs[0].bandwidth, 20e9);  // not split: one pipeline over the host anyway
}

}  // namespace
}  // namespace strata
