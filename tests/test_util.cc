#include "tests/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tools/model_maker.h"

namespace strata::testing {

std::unique_ptr<PackedLinear> RandomPackedLinear(QuantFormat format, int64_t rows, int64_t cols,
                                                 int64_t group, bool perm, uint32_t seed) {
  std::mt19937 rng(seed);
  auto p = std::make_unique<PackedLinear>();
  p->format = format;
  p->rows = rows;
  p->cols = cols;
  p->group_size = group;
  const int64_t groups = (cols + group - 1) / group;
  p->codes.resize(format == QuantFormat::kInt4 ? rows * cols / 2 : rows * cols);
  for (uint8_t& c : p->codes) {
    c = static_cast<uint8_t>(rng());
    // Keep FP8 codes finite: 0x7f / 0xff are NaN.
    if (format == QuantFormat::kFp8 && (c & 0x7f) == 0x7f) c ^= 1;
  }
  std::uniform_real_distribution<float> scale(0.01f, 0.1f), offset(-0.8f, 0.0f);
  p->scales.resize(rows * groups);
  for (float& s : p->scales) s = format == QuantFormat::kFp8 ? scale(rng) * 0.02f : scale(rng);
  if (format != QuantFormat::kFp8) {
    p->offsets.resize(rows * groups);
    for (float& o : p->offsets) o = offset(rng);
  }
  if (perm) {
    p->perm.resize(cols);
    std::iota(p->perm.begin(), p->perm.end(), 0);
    std::shuffle(p->perm.begin(), p->perm.end(), rng);
  }
  return p;
}
namespace fs = std::filesystem;

namespace {
const std::string& Root() {
  static const std::string* root = [] {
    std::string tmpl = (fs::temp_directory_path() / "strata-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    std::atexit([] { fs::remove_all(Root()); });
    return new std::string(tmpl);
  }();
  return *root;
}
}  // namespace

const std::string& TestModel(const std::string& flavour, const std::string& dtype, int shards) {
  static auto* made = new std::map<std::string, std::string>();
  const std::string key = absl::StrCat(flavour, "-", dtype, "-", shards);
  auto it = made->find(key);
  if (it != made->end()) return it->second;
  const std::string dir = Root() + "/" + key;
  ModelSpec spec;
  spec.flavour = flavour;
  spec.dtype = dtype;
  spec.shards = shards;
  absl::Status s = MakeModel(spec, dir);
  if (!s.ok()) {
    ADD_FAILURE() << "MakeModel " << key << ": " << s;
  }
  return (*made)[key] = dir;
}

std::string FreshDir(const std::string& name) {
  static int counter = 0;
  const std::string dir = absl::StrCat(Root(), "/", name, "-", counter++);
  fs::create_directories(dir);
  return dir;
}

std::string CopyModel(const std::string& from, const std::string& name) {
  const std::string dir = FreshDir(name);
  fs::copy(from, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dir;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

int RunCommand(const std::string& command, std::string* output) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  output->clear();
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace strata::testing
