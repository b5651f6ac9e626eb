// Opens libstrata_spm.so (spm_bridge.cc) privately; see spm_bridge.h for why.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "runtime/tokenizer/spm_bridge.h"

namespace strata::spm {
namespace {

using LoadFn = Processor* (*)(const std::string&, std::string*);
using TrainFn = bool (*)(const std::vector<std::string>&, const std::string&, std::string*,
                         std::string*);

struct Module {
  LoadFn load_file = nullptr;
  LoadFn from_serialized = nullptr;
  TrainFn train = nullptr;
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
      module.error = "cannot load the SentencePiece module libstrata_spm.so (set "
                     "STRATA_SPM_LIBRARY to its path); tried:" + tried;
      return;
    }
    module.load_file = reinterpret_cast<LoadFn>(dlsym(handle, "strata_spm_load_file"));
    module.from_serialized = reinterpret_cast<LoadFn>(dlsym(handle, "strata_spm_from_serialized"));
    module.train = reinterpret_cast<TrainFn>(dlsym(handle, "strata_spm_train"));
    if (!module.load_file || !module.from_serialized || !module.train) {
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

std::unique_ptr<Processor> Processor::FromSerialized(const std::string& bytes,
                                                     std::string* error) {
  const Module& m = GetModule();
  if (m.from_serialized == nullptr) {
    *error = m.error;
    return nullptr;
  }
  return std::unique_ptr<Processor>(m.from_serialized(bytes, error));
}

bool Train(const std::vector<std::string>& sentences, const std::string& args, std::string* model,
           std::string* error) {
  const Module& m = GetModule();
  if (m.train == nullptr) {
    *error = m.error;
    return false;
  }
  return m.train(sentences, args, model, error);
}

}  // namespace strata::spm
