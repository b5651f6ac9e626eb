#include "tests/services/cluster_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "runtime/config.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"
#include "services/common/certs.h"
#include "services/common/convert.h"
#include "services/common/server.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

using Clock = std::chrono::steady_clock;

bool WaitExit(pid_t pid, int timeout_ms, int* status) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (waitpid(pid, status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

std::unique_ptr<Cluster> Cluster::Start(const std::string& model, int workers,
                                        const std::vector<std::string>& extra) {
  static int counter = 0;
  const std::string dir = FreshDir(absl::StrCat("cluster-", getpid(), "-", counter++));
  auto c = std::unique_ptr<Cluster>(new Cluster());
  c->workers_ = workers;
  c->log_ = dir + "/up.log";
  const std::string address_file = dir + "/addresses";
  std::vector<std::string> args = {STRATA_BINARY,    "up",
                                   "--model",        model,
                                   "--workers",      std::to_string(workers),
                                   "--address-file", address_file,
                                   "--log-dir",      dir + "/logs"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // `strata up` stops its cluster with it
    const int fd = open(c->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  c->pid_ = pid;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    std::ifstream f(address_file);
    std::string role, address, metrics;
    pid_t p;
    while (f >> role >> address >> p >> metrics) c->roles_[role] = {address, p, metrics};
    const int extra = static_cast<int>(c->roles_.count("http"));
    if (c->roles_.count("gateway") && static_cast<int>(c->roles_.size()) == workers + 2 + extra) {
      const std::string certs = dir + "/logs/certs";
      if (std::ifstream(certs + "/operator.crt").good()) {
        c->cert_dir_ = certs;
        auto security = TransportSecurity::Mutual(
            {certs + "/operator.crt", certs + "/operator.key", certs + "/ca.crt"});
        EXPECT_TRUE(security.ok()) << security.status();
        if (security.ok()) c->security_ = *security;
      }
      return c;
    }
    c->roles_.clear();
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      c->pid_ = -1;
      ADD_FAILURE() << "strata up exited (status " << status << "):\n" << ReadFile(c->log_);
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "strata up did not come up in 60 s:\n" << ReadFile(c->log_);
  return nullptr;
}

Cluster::~Cluster() {
  // A failed test shows what the processes said, shutdown included (their
  // logs die with the temporary folder). A suite's shared cluster ends after
  // its tests, so any failure so far counts.
  const bool failed =
      ::testing::Test::HasFailure() || ::testing::UnitTest::GetInstance()->failed_test_count() > 0;
  const bool started = pid_ > 0;
  Stop();
  if (!failed || !started) return;
  const std::string logs = log_dir();
  for (const char* name :
       {"coordinator", "gateway", "worker-0", "worker-1", "worker-2", "worker-3"}) {
    const std::string text = ReadFile(logs + "/" + name + ".log");
    if (text.empty()) continue;
    const size_t from = text.size() > 6000 ? text.size() - 6000 : 0;
    std::fprintf(stderr, "---- %s.log (tail) ----\n%s\n", name, text.substr(from).c_str());
  }
}

int Cluster::Stop() {
  for (pid_t p : extra_workers_) {
    kill(p, SIGCONT);
    kill(p, SIGTERM);
    int st = 0;
    if (!WaitExit(p, 10'000, &st)) {
      kill(p, SIGKILL);
      waitpid(p, &st, 0);
    }
  }
  extra_workers_.clear();
  if (pid_ <= 0) return -1;
  // Stopped workers must run again to hear the shutdown.
  for (const auto& [role, a] : roles_) {
    if (role.rfind("worker-", 0) == 0) kill(a.pid, SIGCONT);
  }
  int status = 0;
  kill(pid_, SIGINT);
  if (!WaitExit(pid_, 60'000, &status)) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    status = -1;
  }
  pid_ = -1;
  return status;
}

std::vector<ClusterAddress> Cluster::workers() const {
  std::vector<ClusterAddress> out;
  for (int i = 0; i < workers_; ++i) out.push_back(roles_.at(absl::StrCat("worker-", i)));
  return out;
}

std::unique_ptr<v1::Generation::Stub> Cluster::generation() const {
  return v1::Generation::NewStub(Dial(gateway()));
}

std::unique_ptr<v1::Coordinator::Stub> Cluster::coordinator_stub() const {
  return v1::Coordinator::NewStub(Dial(coordinator(), security_.get()));
}

std::unique_ptr<v1::Worker::Stub> Cluster::worker_stub(const std::string& address) const {
  return v1::Worker::NewStub(Dial(address, security_.get()));
}

std::vector<std::vector<uint64_t>> Cluster::WorkerSequences() const {
  std::vector<std::vector<uint64_t>> out;
  // The workers of the current maps, replica by replica (a lost one may be
  // dead or stopped).
  const v1::ModelInfo info = Info();
  std::vector<v1::StageInfo> stages(info.layer_map().stages().begin(),
                                    info.layer_map().stages().end());
  for (int r = 1; r < info.replicas_size(); ++r) {
    stages.insert(stages.end(), info.replicas(r).stages().begin(), info.replicas(r).stages().end());
  }
  for (const v1::StageInfo& w : stages) {
    auto stub = worker_stub(w.address());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::WorkerStatus status;
    EXPECT_TRUE(stub->GetStatus(&ctx, {}, &status).ok()) << w.address();
    out.emplace_back(status.seq_ids().begin(), status.seq_ids().end());
  }
  return out;
}

bool Cluster::WaitKvFree(int timeout_ms) const {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    bool empty = true;
    for (const auto& seqs : WorkerSequences()) empty &= seqs.empty();
    if (empty) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

v1::ModelInfo Cluster::Info() const {
  auto stub = coordinator_stub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ClusterInfo info;
  const grpc::Status st = stub->GetClusterInfo(&ctx, {}, &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return info.model();
}

bool Cluster::WaitInfo(const std::function<bool(const v1::ModelInfo&)>& pred,
                       int timeout_ms) const {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (pred(Info())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

pid_t Cluster::StartWorker(const std::string& id, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {STRATA_BINARY,   "worker",     "--id", id,
                                   "--coordinator", coordinator()};
  if (!cert_dir_.empty()) {
    // A certificate for the new worker, from the run's CA.
    const absl::Status made = MakeCertificates(cert_dir_, {{Role::kWorker, id}}, {"127.0.0.1"}, 1);
    EXPECT_TRUE(made.ok()) << made;
    args.insert(args.end(), {"--tls-cert", cert_dir_ + "/" + id + ".crt", "--tls-key",
                             cert_dir_ + "/" + id + ".key", "--tls-ca", cert_dir_ + "/ca.crt"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = log_ + "." + id + ".log";
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  extra_workers_.push_back(pid);
  return pid;
}

StreamResult Stream(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                    int timeout_ms) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(timeout_ms > 0 ? timeout_ms : 60'000));
  auto reader = stub.Generate(&ctx, request);
  StreamResult r;
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      const v1::Delta& d = response.delta();
      ++r.deltas;
      r.text += d.text();
      r.tokens.insert(r.tokens.end(), d.token_ids().begin(), d.token_ids().end());
      StreamResult::Choice& c = r.choices[d.index()];
      c.text += d.text();
      c.tokens.insert(c.tokens.end(), d.token_ids().begin(), d.token_ids().end());
    } else {
      r.finished = response.finished();
      r.choices[r.finished.index()].finished.push_back(r.finished);
    }
  }
  grpc::Status st = reader->Finish();
  r.code = st.error_code();
  r.message = st.error_message();
  return r;
}

v1::GenerateRequest TextRequest(const std::string& prompt, int max_tokens,
                                const SamplingParams& sampling, bool ignore_eos) {
  v1::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  *r.mutable_sampling() = SamplingToProto(sampling);
  r.set_ignore_eos(ignore_eos);
  return r;
}

Reference GenerateLocally(const std::string& model, const std::string& prompt, int max_tokens,
                          const SamplingParams& sampling, bool ignore_eos, int64_t max_context,
                          const std::string& device) {
  Reference ref;
  auto config = LoadModelConfig(model);
  auto tokenizer = LoadTokenizer(model);
  EXPECT_TRUE(config.ok() && tokenizer.ok());
  StageOptions options;
  options.max_sequences = 1;
  options.max_context = max_context;
  options.device = device;
  auto pipeline = LocalPipeline::Load(model, *config, {}, options);
  EXPECT_TRUE(pipeline.ok()) << pipeline.status();
  GenerateRequest request;
  ref.prompt = *(*tokenizer)->Encode(prompt, (*tokenizer)->add_bos_by_default());
  request.prompt_ids = ref.prompt;
  request.max_tokens = max_tokens;
  request.sampling = sampling;
  request.ignore_eos = ignore_eos;
  IncrementalDetokenizer detok(**tokenizer, false);
  auto result = Generate(**pipeline, request, [&](int32_t id) { ref.text += detok.Push(id); });
  EXPECT_TRUE(result.ok()) << result.status();
  ref.text += detok.Flush();
  if (result.ok()) ref.tokens = result->tokens;
  return ref;
}

std::string HttpGet(const std::string& address, const std::string& path) {
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
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: strata\r\n\r\n";
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

double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels) {
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

}  // namespace strata::testing
