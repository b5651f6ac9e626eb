// Every process of a running local cluster serves Prometheus metrics that
// promtool accepts, and the series move as requests are served.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

// GET http://address/metrics; the body, or "" on failure.
std::string Scrape(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(address.substr(colon + 1).c_str())));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: strata\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of the first sample of `name` whose labels contain every one of
// `labels` (e.g. `outcome="ok"`); -1 when there is none.
double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name) || line.size() <= name.size() ||
        (line[name.size()] != '{' && line[name.size()] != ' ')) {
      continue;
    }
    bool all = true;
    for (const std::string& l : labels) all &= line.find(l) != absl::string_view::npos;
    if (!all) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) return v;
  }
  return -1;
}

TEST(MetricsTest, EveryProcessServesValidMetricsThatMove) {
  auto cluster = Cluster::Start(TestModel("llama"), 2);
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
  const std::string model = "model=\"" + TestModel("llama").substr(TestModel("llama").rfind('/') + 1) + "\"";

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
    EXPECT_EQ(Sample(m, "strata_worker_step_duration_seconds_count", {who, "phase=\"prefill\""}),
              3)
        << role;
  }
  EXPECT_GT(Sample(after["worker-0"], "strata_worker_sent_bytes_total"), 0);
  EXPECT_GT(Sample(after["worker-1"], "strata_worker_received_bytes_total"), 0);
}

}  // namespace
}  // namespace strata::testing
