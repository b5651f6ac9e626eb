#include "tools/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "runtime/status_macros.h"
#include "services/common/certs.h"
#include "services/common/server.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

std::string Tail(const std::string& path, int lines) {
  std::ifstream f(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(f, line);) all.push_back(line);
  const size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); ++i) absl::StrAppend(&out, "    ", all[i], "\n");
  return out;
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "stopped";
}

}  // namespace

LocalCluster::~LocalCluster() { Stop().IgnoreError(); }

absl::StatusOr<LocalCluster::Child*> LocalCluster::Spawn(const std::string& binary,
                                                         const std::string& name,
                                                         const std::vector<std::string>& args) {
  Child c;
  c.name = name;
  c.log = absl::StrCat(log_dir_, "/", name, ".log");
  std::vector<std::string> argv = {"strata"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork for ", name, " failed"));
  if (pid == 0) {
    // The child: die with the launcher, log to its file, default signal mask.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    const int fd = open(c.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    execv(binary.c_str(), cargv.data());
    _exit(127);
  }
  c.pid = pid;
  children_.push_back(c);
  return &children_.back();
}

int64_t ResidentKiB(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(6, line.find(" kB") - 6)),
                           &kib)) {
        return kib;
      }
    }
  }
  return -1;
}

absl::Status LocalCluster::ExitError(const Child& c) const {
  return absl::UnavailableError(absl::StrCat(c.name, " (pid ", c.pid, ") ", Describe(c.status),
                                             "; the end of ", c.log, ":\n", Tail(c.log, 12)));
}

absl::Status LocalCluster::CheckChildren() {
  for (Child& c : children_) {
    if (c.exited || c.pid <= 0) continue;
    if (waitpid(c.pid, &c.status, WNOHANG) == c.pid) {
      c.exited = true;
      // A worker may die: the coordinator fails over to the others. The
      // coordinator and the gateway are the cluster.
      if (c.name.rfind("worker-", 0) == 0 && !coordinator_.empty()) {
        std::fprintf(stderr, "strata up: %s (pid %d) %s; the coordinator fails over\n",
                     c.name.c_str(), c.pid, Describe(c.status).c_str());
        continue;
      }
      return ExitError(c);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LocalCluster::WaitAddress(Child* child, const std::string& file,
                                                      int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    std::ifstream f(file);
    std::string address, metrics;
    if (f >> address >> metrics && !address.empty()) {
      child->metrics = metrics;
      return address;
    }
    RETURN_IF_ERROR(CheckChildren());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(child->name, " did not start listening within ",
                                                  timeout_ms / 1000.0, " s; see ", child->log));
}

absl::Status LocalCluster::Start(const UpOptions& o) {
  children_.reserve(o.workers + 2);
  log_dir_ = o.log_dir;
  if (log_dir_.empty()) {
    std::string tmpl = "/tmp/strata-up-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return absl::InternalError("cannot create a log folder");
    log_dir_ = tmpl;
  } else {
    std::filesystem::create_directories(log_dir_);
  }
  const std::string listen = absl::StrCat(o.host, ":0");
  auto file = [&](const std::string& name) { return absl::StrCat(log_dir_, "/", name, ".addr"); };
  // Mutual TLS unless asked not to: a CA of this run signs one certificate
  // per process; each flag list below gets its own.
  auto tls_flags = [&](const std::string& name) -> std::vector<std::string> {
    if (o.insecure) return {};
    return {"--tls-cert", absl::StrCat(cert_dir_, "/", name, ".crt"),
            "--tls-key",  absl::StrCat(cert_dir_, "/", name, ".key"),
            "--tls-ca",   cert_dir_ + "/ca.crt"};
  };
  if (!o.insecure) {
    cert_dir_ = log_dir_ + "/certs";
    RETURN_IF_ERROR(MakeCertificates(cert_dir_, ClusterCertRequests(o.workers), {o.host}, 30));
    ASSIGN_OR_RETURN(operator_security_, TransportSecurity::Mutual({cert_dir_ + "/operator.crt",
                                                                    cert_dir_ + "/operator.key",
                                                                    cert_dir_ + "/ca.crt"}));
  }
  for (const char* n : {"coordinator", "gateway"}) std::filesystem::remove(file(n));

  std::vector<std::string> args = {"coordinator",
                                   "--model",
                                   o.model_dir,
                                   "--workers",
                                   std::to_string(o.workers),
                                   "--listen",
                                   listen,
                                   "--address-file",
                                   file("coordinator"),
                                   "--max-sequences",
                                   std::to_string(o.max_sequences),
                                   "--max-context",
                                   std::to_string(o.max_context),
                                   "--max-batch-tokens",
                                   std::to_string(o.max_batch_tokens),
                                   "--max-inflight-steps",
                                   std::to_string(o.max_inflight_steps),
                                   "--startup-timeout-ms",
                                   std::to_string(o.startup_timeout_ms)};
  if (!o.layers.empty()) args.insert(args.end(), {"--layers", o.layers});
  if (o.replicas != 0) args.insert(args.end(), {"--replicas", std::to_string(o.replicas)});
  for (std::string& flag : tls_flags("coordinator")) args.push_back(std::move(flag));
  args.insert(args.end(), o.coordinator_flags.begin(), o.coordinator_flags.end());
  ASSIGN_OR_RETURN(Child * coord, Spawn(o.binary, "coordinator", args));
  ASSIGN_OR_RETURN(coordinator_, WaitAddress(coord, file("coordinator"), 30'000));

  std::vector<Child*> workers;
  for (int i = 0; i < o.workers; ++i) {
    const std::string name = absl::StrCat("worker-", i);
    std::filesystem::remove(file(name));
    std::vector<std::string> wargs = {"worker",
                                      "--id",
                                      name,
                                      "--coordinator",
                                      coordinator_,
                                      "--listen",
                                      listen,
                                      "--address-file",
                                      file(name),
                                      "--threads",
                                      std::to_string(o.threads),
                                      "--model-root",
                                      o.model_dir};
    for (std::string& flag : tls_flags(name)) wargs.push_back(std::move(flag));
    if (i < static_cast<int>(o.worker_devices.size())) {
      wargs.insert(wargs.end(), {"--device", o.worker_devices[i]});
    }
    // "{i}" in a flag is the worker's index: --device cuda:{i} spreads the
    // workers over the GPUs.
    for (const std::string& flag : o.worker_flags) {
      wargs.push_back(absl::StrReplaceAll(flag, {{"{i}", std::to_string(i)}}));
    }
    ASSIGN_OR_RETURN(Child * w, Spawn(o.binary, name, wargs));
    workers.push_back(w);
  }
  for (int i = 0; i < o.workers; ++i) {
    const std::string name = absl::StrCat("worker-", i);
    ASSIGN_OR_RETURN(std::string addr, WaitAddress(workers[i], file(name), 30'000));
    worker_addrs_.emplace_back(name, addr);
  }

  // Wait for the coordinator to plan, load and serve.
  auto stub = v1::Coordinator::NewStub(Dial(coordinator_, operator_security_.get()));
  const auto deadline = Clock::now() + std::chrono::milliseconds(o.startup_timeout_ms + 5000);
  auto shown = Clock::now();
  while (true) {
    RETURN_IF_ERROR(CheckChildren());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    const bool answered = stub->GetClusterInfo(&ctx, {}, &info_).ok();
    if (answered && info_.serving()) break;
    // The workers' weight reads, as their heartbeats report them.
    if (answered && Clock::now() - shown >= std::chrono::seconds(1)) {
      std::string loading;
      for (const v1::WorkerHealth& w : info_.model().workers()) {
        if (w.load_total_bytes() <= 0) continue;
        const double rate = w.load_bytes_per_second();
        absl::StrAppendFormat(
            &loading, "%s%s %.0f%% of %.1f MiB at %.1f MB/s (ETA %.0f s)",
            loading.empty() ? "" : "; ", w.worker_id(),
            100.0 * static_cast<double>(w.load_done_bytes()) / w.load_total_bytes(),
            w.load_total_bytes() / 1048576.0, rate / 1e6,
            rate > 0 ? (w.load_total_bytes() - w.load_done_bytes()) / rate : 0.0);
      }
      if (!loading.empty()) {
        std::fprintf(stderr, "strata up: reading weights: %s\n", loading.c_str());
        shown = Clock::now();
      }
    }
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("the cluster did not start serving within ",
                                                      o.startup_timeout_ms / 1000.0, " s; logs in ",
                                                      log_dir_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  std::vector<std::string> gargs = {
      "gateway",       "--coordinator", coordinator_,
      "--listen",      listen,          "--address-file",
      file("gateway"), "--max-pending", std::to_string(o.max_pending)};
  for (std::string& flag : tls_flags("gateway")) gargs.push_back(std::move(flag));
  if (!o.api_key_file.empty()) gargs.insert(gargs.end(), {"--api-key-file", o.api_key_file});
  if (!o.http_listen.empty()) gargs.insert(gargs.end(), {"--http-listen", o.http_listen});
  gargs.insert(gargs.end(), o.gateway_flags.begin(), o.gateway_flags.end());
  ASSIGN_OR_RETURN(Child * gw, Spawn(o.binary, "gateway", gargs));
  ASSIGN_OR_RETURN(gateway_, WaitAddress(gw, file("gateway"), 30'000));
  if (!o.http_listen.empty()) {
    // The gateway's address file: "grpc metrics http".
    std::ifstream f(file("gateway"));
    std::string grpc_address, metrics_address;
    f >> grpc_address >> metrics_address >> http_;
  }
  return absl::OkStatus();
}

void LocalCluster::StopChild(Child* c, int grace_ms) {
  if (c->exited || c->pid <= 0) return;
  if (!c->signalled) kill(c->pid, SIGTERM);  // a second one would cut its drain short
  c->signalled = true;
  const auto deadline = Clock::now() + std::chrono::milliseconds(grace_ms);
  while (Clock::now() < deadline) {
    if (waitpid(c->pid, &c->status, WNOHANG) == c->pid) {
      c->exited = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(c->pid, SIGKILL);
  waitpid(c->pid, &c->status, 0);
  c->exited = true;
}

absl::Status LocalCluster::Stop() {
  absl::Status first = CheckChildren();
  // Gateway first (finishes its streams), then the coordinator (drains the
  // pipeline), then the workers.
  for (const char* role : {"gateway", "coordinator"}) {
    for (Child& c : children_) {
      if (c.name == role) StopChild(&c, 35'000);
    }
  }
  // The workers together: each has nothing left to finish.
  for (Child& c : children_) {
    if (!c.exited && c.pid > 0 && kill(c.pid, SIGTERM) == 0) c.signalled = true;
  }
  for (Child& c : children_) StopChild(&c, 10'000);
  children_.clear();
  return first;
}

std::string LocalCluster::AddressLines() const {
  auto line = [&](const std::string& name, const std::string& address) {
    for (const Child& c : children_) {
      if (c.name == name) return absl::StrCat(name, " ", address, " ", c.pid, " ", c.metrics, "\n");
    }
    return absl::StrCat(name, " ", address, " -1 -\n");
  };
  std::string out = line("gateway", gateway_) + line("coordinator", coordinator_);
  if (!http_.empty()) out += line("gateway", http_).replace(0, 7, "http");
  for (const auto& [name, addr] : worker_addrs_) out += line(name, addr);
  return out;
}

std::string LocalCluster::MetricsSummary() const {
  std::string out;
  for (const Child& c : children_) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", c.name, " http://", c.metrics, "/metrics");
  }
  return out;
}

}  // namespace strata
