#include "runtime/device_table.h"

#include <cctype>
#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

struct Row {
  DeviceModel model;
  const char* token;  // a word of the CUDA name that identifies the part
};

// Memory as the driver reports the total; bandwidth and dense (not sparse)
// bf16 tensor throughput from the data sheets (SXM parts for A100/H100).
const std::vector<Row>& Rows() {
  static const std::vector<Row>* rows = new std::vector<Row>{
      {{"a100-40gb", "A100-40GB", 40960 * kMiB, 1555e9, 312e12}, "A100"},
      {{"a100-80gb", "A100-80GB", 81920 * kMiB, 2039e9, 312e12}, "A100"},
      {{"h100-80gb", "H100-80GB", 81559 * kMiB, 3350e9, 989e12}, "H100"},
      {{"h200", "H200", 143771 * kMiB, 4800e9, 989e12}, "H200"},
      {{"l4", "L4", 23034 * kMiB, 300e9, 121e12}, "L4"},
      {{"a10", "A10", 23028 * kMiB, 600e9, 125e12}, "A10"},
      {{"rtx-3090", "RTX 3090", 24576 * kMiB, 936e9, 71e12}, "3090"},
      {{"rtx-4090", "RTX 4090", 24564 * kMiB, 1008e9, 165e12}, "4090"},
      {{"rtx-a6000", "RTX A6000", 49140 * kMiB, 768e9, 155e12}, "A6000"},
  };
  return *rows;
}

// The name's words, upper-cased: "NVIDIA A100-SXM4-40GB" -> NVIDIA A100 SXM4 40GB.
std::vector<std::string> Words(const std::string& name) {
  std::vector<std::string> words(1);
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      words.back() += absl::ascii_toupper(static_cast<unsigned char>(c));
    } else if (!words.back().empty()) {
      words.emplace_back();
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

}  // namespace

const std::vector<DeviceModel>& KnownDevices() {
  static const std::vector<DeviceModel>* models = [] {
    auto* out = new std::vector<DeviceModel>;
    for (const Row& r : Rows()) out->push_back(r.model);
    return out;
  }();
  return *models;
}

absl::StatusOr<DeviceModel> FindDevice(const std::string& name) {
  const std::string key = absl::AsciiStrToLower(name);
  std::vector<std::string> keys;
  for (const DeviceModel& d : KnownDevices()) {
    if (d.name == key || absl::AsciiStrToLower(d.label) == key) return d;
    keys.push_back(d.name);
  }
  return absl::NotFoundError(
      absl::StrCat("\"", name, "\" is not a known device; known: ", absl::StrJoin(keys, ", ")));
}

std::optional<DeviceModel> MatchCudaDevice(const std::string& cuda_name, int64_t total_bytes) {
  const std::vector<std::string> words = Words(cuda_name);
  std::optional<DeviceModel> best;
  double best_gap = std::numeric_limits<double>::infinity();
  for (const Row& r : Rows()) {
    bool named = false;
    for (const std::string& w : words) named = named || w == r.token;
    if (!named) continue;
    // One name, several memory sizes (A100 40/80 GB): the nearest total.
    const double gap = std::abs(static_cast<double>(r.model.memory_bytes - total_bytes));
    if (gap < best_gap) {
      best_gap = gap;
      best = r.model;
    }
  }
  return best;
}

}  // namespace strata
