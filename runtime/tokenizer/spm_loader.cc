// Opens libstrata_spm.so (spm_bridge.cc) privately and runs the trainer
// helper (spm_train_main.cc); see spm_bridge.h for why.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "runtime/tokenizer/spm_bridge.h"

namespace strata::spm {
namespace {

using LoadFn = Processor* (*)(const std::string&, std::string*);

struct Module {
  LoadFn load_file = nullptr;
  LoadFn from_serialized = nullptr;
  std::string error;
};

std::string ExecutableDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

const Module& GetModule() {
  static Module module;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("STRATA_SPM_LIBRARY"); env != nullptr && *env) {
      candidates.push_back(env);
    }
    candidates.push_back(STRATA_SPM_MODULE_PATH);
    candidates.push_back(ExecutableDir() + "/libstrata_spm.so");
    void* handle = nullptr;
    for (const std::string& c : candidates) {
      handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle != nullptr) break;
      const char* why = dlerror();
      tried += "\n  " + c + ": " + (why ? why : "not found");
    }
    if (handle == nullptr) {
      module.error =
          "cannot load the SentencePiece module libstrata_spm.so (set "
          "STRATA_SPM_LIBRARY to its path); tried:" +
          tried;
      return;
    }
    module.load_file = reinterpret_cast<LoadFn>(dlsym(handle, "strata_spm_load_file"));
    module.from_serialized = reinterpret_cast<LoadFn>(dlsym(handle, "strata_spm_from_serialized"));
    if (!module.load_file || !module.from_serialized) {
      module.error = "libstrata_spm.so lacks its entry points (a stale build?)";
      module.load_file = nullptr;
    }
  });
  return module;
}

}  // namespace

std::unique_ptr<Processor> Processor::LoadFile(const std::string& path, std::string* error) {
  const Module& m = GetModule();
  if (m.load_file == nullptr) {
    *error = m.error;
    return nullptr;
  }
  return std::unique_ptr<Processor>(m.load_file(path, error));
}

std::unique_ptr<Processor> Processor::FromSerialized(const std::string& bytes, std::string* error) {
  const Module& m = GetModule();
  if (m.from_serialized == nullptr) {
    *error = m.error;
    return nullptr;
  }
  return std::unique_ptr<Processor>(m.from_serialized(bytes, error));
}

// Runs strata-spm-train: sentences in on stdin, the model out on stdout.
bool Train(const std::vector<std::string>& sentences, const std::string& args, std::string* model,
           std::string* error) {
  std::string helper;
  if (const char* env = std::getenv("STRATA_SPM_TRAIN"); env != nullptr && *env) {
    helper = env;
  } else if (access(STRATA_SPM_TRAIN_PATH, X_OK) == 0) {
    helper = STRATA_SPM_TRAIN_PATH;
  } else {
    helper = ExecutableDir() + "/strata-spm-train";
  }
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    *error = "cannot create pipes for " + helper;
    return false;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    *error = "cannot fork " + helper;
    return false;
  }
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execl(helper.c_str(), helper.c_str(), args.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  // The helper reads all of stdin before it writes, so write, then read.
  std::string input;
  for (const std::string& s : sentences) input += std::to_string(s.size()) + "\n" + s;
  signal(SIGPIPE, SIG_IGN);
  for (size_t done = 0; done < input.size();) {
    const ssize_t n = write(in[1], input.data() + done, input.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(in[1]);
  auto drain = [](int fd) {
    std::string data;
    char buf[65536];
    for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) data.append(buf, static_cast<size_t>(n));
    close(fd);
    return data;
  };
  *model = drain(out[0]);
  const std::string messages = drain(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  *error = WIFEXITED(status) && WEXITSTATUS(status) == 127
               ? "cannot run the SentencePiece trainer " + helper + " (set STRATA_SPM_TRAIN)"
               : helper + ": " + messages;
  return false;
}

}  // namespace strata::spm
