// Every process of a running local cluster serves Prometheus metrics that
// promtool accepts, and the series move as requests are served.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

std::string Scrape(const std::string& address) { return HttpGet(address, "/metrics"); }

// Starts a local cluster whose workers load `nvml` as their NVML library and
// see only the GPUs `visible` names (CUDA_VISIBLE_DEVICES).
std::unique_ptr<Cluster> StartWithNvml(int workers, const char* nvml, const char* visible) {
  setenv("STRATA_NVML_LIBRARY", nvml, 1);
  if (visible != nullptr) setenv("CUDA_VISIBLE_DEVICES", visible, 1);
  auto cluster = Cluster::Start(TestModel("llama"), workers);
  unsetenv("STRATA_NVML_LIBRARY");
  unsetenv("CUDA_VISIBLE_DEVICES");
  return cluster;
}

TEST(MetricsTest, EveryProcessServesValidMetricsThatMove) {
  // The workers read GPU telemetry through a stand-in NVML with two GPUs, of
  // which CUDA_VISIBLE_DEVICES (a UUID prefix, as CUDA accepts) leaves one.
  auto cluster = StartWithNvml(2, FAKE_NVML, "GPU-fa4e0000-0000-0000-0000-000000000001");
  ASSERT_NE(cluster, nullptr);
  const std::vector<std::string> roles = {"gateway", "coordinator", "worker-0", "worker-1"};
  std::map<std::string, std::string> before;
  for (const std::string& role : roles) before[role] = Scrape(cluster->metrics_of(role));

  auto stub = cluster->generation();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Stream(*stub, TextRequest("The old lighthouse keeper", 8, {}, true)).code, 0);
  }
  auto bad = TextRequest("hello", 8);
  bad.mutable_sampling()->set_top_p(0);
  ASSERT_EQ(Stream(*stub, bad).code, grpc::StatusCode::INVALID_ARGUMENT);

  const std::string dir = FreshDir("metrics");
  std::map<std::string, std::string> after;
  for (const std::string& role : roles) {
    after[role] = Scrape(cluster->metrics_of(role));
    ASSERT_FALSE(after[role].empty()) << role << " at " << cluster->metrics_of(role);
    const std::string file = dir + "/" + role + ".prom";
    WriteFile(file, after[role]);
    std::string out;
    EXPECT_EQ(RunCommand("promtool check metrics < " + file, &out), 0) << role << ":\n" << out;
  }
  const std::string model =
      "model=\"" + TestModel("llama").substr(TestModel("llama").rfind('/') + 1) + "\"";

  // Gateway: outcomes, tokens, latency histograms.
  const std::string& g = after["gateway"];
  const std::string& g0 = before["gateway"];
  const std::vector<std::string> ok = {model, "outcome=\"ok\"", "finish_reason=\"length\""};
  EXPECT_EQ(Sample(g, "strata_gateway_requests_total", ok) -
                std::max(0.0, Sample(g0, "strata_gateway_requests_total", ok)),
            3);
  EXPECT_EQ(Sample(g, "strata_gateway_requests_total", {"outcome=\"invalid\""}), 1);
  EXPECT_EQ(Sample(g, "strata_gateway_completion_tokens_total", {model}) -
                Sample(g0, "strata_gateway_completion_tokens_total", {model}),
            24);
  EXPECT_EQ(Sample(g, "strata_gateway_time_to_first_token_seconds_count", {model}), 3);
  EXPECT_EQ(Sample(g, "strata_gateway_queue_time_seconds_count", {model}), 3);
  EXPECT_LE(Sample(g, "strata_gateway_queue_time_seconds_sum", {model}),
            Sample(g, "strata_gateway_time_to_first_token_seconds_sum", {model}));
  EXPECT_EQ(Sample(g, "strata_gateway_inter_token_latency_seconds_count", {model}), 21);
  EXPECT_EQ(Sample(g, "strata_gateway_queue_length", {model}), 0);

  // Coordinator: the map and the batches.
  const std::string& c = after["coordinator"];
  EXPECT_EQ(Sample(c, "strata_coordinator_map_epoch", {model}), 1);
  EXPECT_EQ(Sample(c, "strata_coordinator_stages", {model}), 2);
  EXPECT_EQ(Sample(c, "strata_coordinator_workers", {"state=\"serving\""}), 2);
  EXPECT_EQ(Sample(c, "strata_coordinator_failovers_total", {model}), 0);
  EXPECT_EQ(Sample(c, "strata_coordinator_queue_time_seconds_count", {model}), 3);
  EXPECT_GE(Sample(c, "strata_coordinator_step_sequences_count", {model}), 24);

  // Workers: what they hold and what they did.
  for (int w = 0; w < 2; ++w) {
    const std::string role = absl::StrCat("worker-", w);
    const std::string who = absl::StrCat("worker=\"", role, "\"");
    const std::string& m = after[role];
    EXPECT_EQ(Sample(m, "strata_worker_layers", {who, model}), 2) << role;
    EXPECT_EQ(Sample(m, "strata_worker_layer_first", {who}), 2 * w) << role;
    EXPECT_GT(Sample(m, "strata_worker_weight_bytes", {who}), 0) << role;
    EXPECT_GT(Sample(m, "strata_worker_kv_blocks_capacity", {who}), 0) << role;
    EXPECT_GE(Sample(m, "strata_worker_steps_total", {who}), 24) << role;
    EXPECT_EQ(Sample(m, "strata_worker_step_duration_seconds_count", {who, "phase=\"prefill\""}), 3)
        << role;
  }
  EXPECT_GT(Sample(after["worker-0"], "strata_worker_sent_bytes_total"), 0);

  // GPU series, labelled as DCGM labels them, for the visible GPU only.
  for (const char* role : {"worker-0", "worker-1"}) {
    const std::string& m = after[role];
    const std::vector<std::string> gpu1 = {
        "gpu=\"1\"", "UUID=\"GPU-fa4e0000-0000-0000-0000-000000000001\"", "gpu_name=\"Fake GPU 1\"",
        model, absl::StrCat("worker=\"", role, "\"")};
    EXPECT_DOUBLE_EQ(Sample(m, "strata_worker_gpu_utilization_ratio", gpu1), 0.37) << role;
    EXPECT_DOUBLE_EQ(Sample(m, "strata_worker_gpu_memory_used_bytes", gpu1), 13.0 * (1 << 30));
    EXPECT_DOUBLE_EQ(Sample(m, "strata_worker_gpu_memory_total_bytes", gpu1), 80.0 * (1 << 30));
    EXPECT_DOUBLE_EQ(Sample(m, "strata_worker_gpu_power_watts", gpu1), 216.5);
    EXPECT_DOUBLE_EQ(Sample(m, "strata_worker_gpu_temperature_celsius", gpu1), 55);
    EXPECT_EQ(Sample(m, "strata_worker_gpu_power_watts", {"gpu=\"0\""}), -1) << role;
  }
  EXPECT_GT(Sample(after["worker-1"], "strata_worker_received_bytes_total"), 0);

  // The dashboard and the alert rules only use series these processes serve
  // (or DCGM's), so they cannot drift from the code.
  std::string all;
  for (const auto& [role, text] : after) all += text;
  for (const char* file :
       {"/deploy/k8s/base/strata-dashboard.json", "/deploy/prometheus/alerts.yml"}) {
    const std::string doc = ReadFile(std::string(STRATA_SOURCE_DIR) + file);
    const std::regex name("strata_[a-z_]+");
    int checked = 0;
    for (auto it = std::sregex_iterator(doc.begin(), doc.end(), name); it != std::sregex_iterator();
         ++it, ++checked) {
      EXPECT_NE(all.find(it->str()), std::string::npos) << file << " uses " << it->str();
    }
    EXPECT_GT(checked, 5) << file;
  }
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A real Prometheus server with the project's configuration scrapes a local
// cluster, and its HTTP API answers queries over Strata's series.
TEST(MetricsTest, PrometheusScrapesTheLocalCluster) {
  // Without NVML (as on this machine) the workers serve, with no GPU series.
  auto cluster = StartWithNvml(2, "/nonexistent/libnvidia-ml.so.1", nullptr);
  ASSERT_NE(cluster, nullptr);
  for (const char* role : {"worker-0", "worker-1"}) {
    const std::string m = Scrape(cluster->metrics_of(role));
    EXPECT_NE(m.find("strata_worker_layers"), std::string::npos) << role;
    EXPECT_EQ(m.find("strata_worker_gpu_"), std::string::npos) << role;
  }
  const std::string dir = FreshDir("prometheus");
  std::string config =
      ReadFile(std::string(STRATA_SOURCE_DIR) + "/deploy/prometheus/prometheus.yml");
  for (const char* key : {"scrape_interval: 5s", "evaluation_interval: 5s"}) {
    const size_t at = config.find(key);
    ASSERT_NE(at, std::string::npos) << key;
    config.replace(at + std::string(key).size() - 2, 2, "1s");
  }
  WriteFile(dir + "/prometheus.yml", config);
  WriteFile(dir + "/alerts.yml",
            ReadFile(std::string(STRATA_SOURCE_DIR) + "/deploy/prometheus/alerts.yml"));
  std::string targets = "[";
  for (const char* role : {"gateway", "coordinator", "worker-0", "worker-1"}) {
    absl::StrAppend(&targets, targets.size() > 1 ? ", " : "", "{\"targets\": [\"",
                    cluster->metrics_of(role), "\"], \"labels\": {\"role\": \"", role, "\"}}");
  }
  std::filesystem::create_directories(dir + "/targets");
  WriteFile(dir + "/targets/local.json", targets + "]");
  const std::string web = absl::StrCat("127.0.0.1:", FreePort());
  const pid_t prometheus = fork();
  if (prometheus == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open((dir + "/prometheus.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execlp("prometheus", "prometheus", ("--config.file=" + dir + "/prometheus.yml").c_str(),
           ("--storage.tsdb.path=" + dir + "/data").c_str(),
           ("--web.listen-address=" + web).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto stub = cluster->generation();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Stream(*stub, TextRequest("The old lighthouse keeper", 6, {}, true)).code, 0);
  }
  auto query = [&](const std::string& q) { return HttpGet(web, "/api/v1/query?query=" + q); };
  // Every target up, and Strata's own series queryable.
  bool up = false;
  std::string answer;
  for (int i = 0; i < 300 && !up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    answer = query("count(up%7Bjob%3D%22strata%22%7D%3D%3D1)");
    up = answer.find("\"4\"]") != std::string::npos;
  }
  EXPECT_TRUE(up) << answer << "\n" << ReadFile(dir + "/prometheus.log");
  answer = query("strata_coordinator_map_epoch");
  EXPECT_NE(answer.find("\"1\"]"), std::string::npos) << answer;
  // The two completions (12 tokens) show once a scrape after them landed.
  for (int i = 0; i < 100; ++i) {
    answer = query("sum(strata_gateway_completion_tokens_total)");
    if (answer.find("\"12\"]") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(answer.find("\"12\"]"), std::string::npos) << answer;
  answer = query("strata_worker_layers");
  EXPECT_NE(answer.find("\"worker\":\"worker-1\""), std::string::npos) << answer;
  // The alert rules loaded.
  const std::string rules = HttpGet(web, "/api/v1/rules");
  EXPECT_NE(rules.find("StrataWorkerDown"), std::string::npos) << rules;
  kill(prometheus, SIGTERM);
  int status = 0;
  waitpid(prometheus, &status, 0);
}

}  // namespace
}  // namespace strata::testing
