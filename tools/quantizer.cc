#include "tools/quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/json.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"

namespace strata {
namespace {

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

std::vector<uint8_t> F16Bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = F32ToF16(v[i]);
  return Bytes(h.data(), h.size() * 2);
}

float RoundF16(float f) { return F16ToF32(F32ToF16(f)); }

std::vector<float> ToF32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = ElementAsF32(t.dtype, t.data, i);
  return out;
}

// GPTQ: round-to-nearest per (row, group) with GPTQ's grid: the range always
// holds 0; symmetric grids centre on 2^(bits-1). The original format stores
// each zero point minus one, so zero points are kept at 1 or more.
void Gptq(const std::string& module, const std::vector<float>& w, int64_t rows, int64_t cols,
          const QuantizeSpec& spec, int bits, std::vector<TensorToWrite>* out) {
  const int per = 32 / bits;
  const int maxq = (1 << bits) - 1;
  const int64_t gs = spec.group_size > 0 ? spec.group_size : cols;
  const int64_t groups = (cols + gs - 1) / gs;
  // Act order: columns by falling norm (a stand-in for GPTQ's Hessian
  // diagonal), each group a run of that order.
  std::vector<int32_t> order(cols);
  std::iota(order.begin(), order.end(), 0);
  if (spec.desc_act) {
    std::vector<double> norm(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) norm[c] += double(w[r * cols + c]) * w[r * cols + c];
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return norm[a] > norm[b]; });
  }
  std::vector<int32_t> g_idx(cols);
  for (int64_t p = 0; p < cols; ++p) g_idx[order[p]] = static_cast<int32_t>(p / gs);
  std::vector<float> scales(groups * rows);
  std::vector<int32_t> zeros(groups * rows);
  std::vector<uint8_t> q(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t pb = g * gs, pe = std::min(cols, pb + gs);
      float lo = 0, hi = 0;
      for (int64_t p = pb; p < pe; ++p) {
        lo = std::min(lo, w[r * cols + order[p]]);
        hi = std::max(hi, w[r * cols + order[p]]);
      }
      if (spec.sym) {
        hi = std::max(std::fabs(lo), hi);
        if (lo < 0) lo = -hi;
      }
      if (lo == 0 && hi == 0) lo = -1, hi = 1;
      const float scale = RoundF16((hi - lo) / static_cast<float>(maxq));
      int zero = spec.sym ? (maxq + 1) / 2 : static_cast<int>(std::nearbyint(-lo / scale));
      zero = std::clamp(zero, 1, maxq);
      scales[g * rows + r] = scale;
      zeros[g * rows + r] = zero;
      for (int64_t p = pb; p < pe; ++p) {
        const int c = order[p];
        const int v = static_cast<int>(std::nearbyint(w[r * cols + c] / scale)) + zero;
        q[r * cols + c] = static_cast<uint8_t>(std::clamp(v, 0, maxq));
      }
    }
  }
  std::vector<int32_t> qweight((cols / per) * rows, 0), qzeros(groups * (rows / per), 0);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      qweight[(c / per) * rows + r] |=
          static_cast<int32_t>(static_cast<uint32_t>(q[r * cols + c]) << ((c % per) * bits));
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      const auto stored = static_cast<uint32_t>(zeros[g * rows + r] - 1);
      qzeros[g * (rows / per) + r / per] |= static_cast<int32_t>(stored << ((r % per) * bits));
    }
  }
  out->push_back({module + ".qweight",
                  DType::kI32,
                  {cols / per, rows},
                  Bytes(qweight.data(), qweight.size() * 4)});
  out->push_back({module + ".qzeros",
                  DType::kI32,
                  {groups, rows / per},
                  Bytes(qzeros.data(), qzeros.size() * 4)});
  out->push_back({module + ".scales", DType::kF16, {groups, rows}, F16Bytes(scales)});
  out->push_back({module + ".g_idx", DType::kI32, {cols}, Bytes(g_idx.data(), g_idx.size() * 4)});
}

// AWQ (GEMM): asymmetric 4-bit per (row, group) over the group's own range;
// eight output columns per int32 in the order 0 2 4 6 1 3 5 7.
void Awq(const std::string& module, const std::vector<float>& w, int64_t rows, int64_t cols,
         const QuantizeSpec& spec, std::vector<TensorToWrite>* out) {
  const int64_t gs = spec.group_size;
  const int64_t groups = (cols + gs - 1) / gs;
  static constexpr int kNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column within 8 -> nibble
  std::vector<float> scales(groups * rows);
  std::vector<int32_t> qweight(cols * (rows / 8), 0), qzeros(groups * (rows / 8), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t cb = g * gs, ce = std::min(cols, cb + gs);
      float lo = w[r * cols + cb], hi = lo;
      for (int64_t c = cb; c < ce; ++c) {
        lo = std::min(lo, w[r * cols + c]);
        hi = std::max(hi, w[r * cols + c]);
      }
      const float scale = RoundF16(std::max(hi - lo, 1e-5f) / 15.0f);
      const int zero = std::clamp(static_cast<int>(-std::nearbyint(lo / scale)), 0, 15);
      scales[g * rows + r] = scale;
      const int shift = kNibble[r % 8] * 4;
      qzeros[g * (rows / 8) + r / 8] |= static_cast<int32_t>(static_cast<uint32_t>(zero) << shift);
      for (int64_t c = cb; c < ce; ++c) {
        const int v =
            std::clamp(static_cast<int>(std::nearbyint(w[r * cols + c] / scale)) + zero, 0, 15);
        qweight[c * (rows / 8) + r / 8] |= static_cast<int32_t>(static_cast<uint32_t>(v) << shift);
      }
    }
  }
  out->push_back({module + ".qweight",
                  DType::kI32,
                  {cols, rows / 8},
                  Bytes(qweight.data(), qweight.size() * 4)});
  out->push_back({module + ".qzeros",
                  DType::kI32,
                  {groups, rows / 8},
                  Bytes(qzeros.data(), qzeros.size() * 4)});
  out->push_back({module + ".scales", DType::kF16, {groups, rows}, F16Bytes(scales)});
}

// FP8 E4M3 with the largest magnitude of each scale's region at 448.
void Fp8(const std::string& module, const std::vector<float>& w, int64_t rows, int64_t cols,
         const std::string& method, std::vector<TensorToWrite>* out) {
  constexpr int64_t kBlock = 128;
  int64_t br = rows, bc = cols;  // the region one scale covers
  if (method == "fp8") br = kBlock, bc = kBlock;
  if (method == "fp8-channel") br = 1;
  const int64_t nr = (rows + br - 1) / br, nc = (cols + bc - 1) / bc;
  std::vector<float> scales(nr * nc, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float& s = scales[(r / br) * nc + c / bc];
      s = std::max(s, std::fabs(w[r * cols + c]));
    }
  for (float& s : scales) s = s > 0 ? s / 448.0f : 1.0f;
  std::vector<uint8_t> codes(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      codes[r * cols + c] = F32ToFp8E4M3(w[r * cols + c] / scales[(r / br) * nc + c / bc]);
  out->push_back({module + ".weight", DType::kF8E4M3, {rows, cols}, std::move(codes)});
  std::vector<int64_t> shape = {nr, nc};
  if (method == "fp8-tensor") shape = {1};
  if (method == "fp8-channel") shape = {rows, 1};
  out->push_back({module + (method == "fp8" ? ".weight_scale_inv" : ".weight_scale"), DType::kF32,
                  shape, Bytes(scales.data(), scales.size() * 4)});
}

Json QuantizationConfig(const QuantizeSpec& spec) {
  const std::string& m = spec.method;
  if (m == "gptq-int4" || m == "gptq-int8") {
    return Json::Object({{"quant_method", Json::String("gptq")},
                         {"bits", Json::Integer(m == "gptq-int4" ? 4 : 8)},
                         {"group_size", Json::Integer(spec.group_size)},
                         {"desc_act", Json::Bool(spec.desc_act)},
                         {"sym", Json::Bool(spec.sym)},
                         {"damp_percent", Json::Number(0.01)},
                         {"true_sequential", Json::Bool(true)},
                         {"static_groups", Json::Bool(false)},
                         {"checkpoint_format", Json::String("gptq")}});
  }
  if (m == "awq-int4") {
    return Json::Object({{"quant_method", Json::String("awq")},
                         {"bits", Json::Integer(4)},
                         {"group_size", Json::Integer(spec.group_size)},
                         {"zero_point", Json::Bool(true)},
                         {"version", Json::String("gemm")},
                         {"modules_to_not_convert", Json::Null()}});
  }
  if (m == "fp8") {
    return Json::Object(
        {{"quant_method", Json::String("fp8")},
         {"fmt", Json::String("e4m3")},
         {"activation_scheme", Json::String("dynamic")},
         {"weight_block_size", Json::Array({Json::Integer(128), Json::Integer(128)})}});
  }
  const Json weights =
      Json::Object({{"num_bits", Json::Integer(8)},
                    {"type", Json::String("float")},
                    {"symmetric", Json::Bool(true)},
                    {"dynamic", Json::Bool(false)},
                    {"strategy", Json::String(m == "fp8-tensor" ? "tensor" : "channel")}});
  const Json acts = Json::Object({{"num_bits", Json::Integer(8)},
                                  {"type", Json::String("float")},
                                  {"symmetric", Json::Bool(true)},
                                  {"dynamic", Json::Bool(true)},
                                  {"strategy", Json::String("token")}});
  return Json::Object(
      {{"quant_method", Json::String("compressed-tensors")},
       {"format", Json::String("float-quantized")},
       {"quantization_status", Json::String("compressed")},
       {"ignore", Json::Array({Json::String("lm_head")})},
       {"config_groups",
        Json::Object({{"group_0", Json::Object({{"targets", Json::Array({Json::String("Linear")})},
                                                {"weights", weights},
                                                {"input_activations", acts}})}})}});
}

}  // namespace

std::vector<std::string> QuantizeMethods() {
  return {"gptq-int4", "gptq-int8", "awq-int4", "fp8", "fp8-tensor", "fp8-channel"};
}

absl::Status CheckQuantizeSpec(const QuantizeSpec& spec) {
  const auto methods = QuantizeMethods();
  if (std::find(methods.begin(), methods.end(), spec.method) == methods.end()) {
    return absl::InvalidArgumentError(absl::StrCat("--method: \"", spec.method, "\" is not one of ",
                                                   absl::StrJoin(methods, ", ")));
  }
  const bool gptq = spec.method.rfind("gptq", 0) == 0;
  if (gptq && spec.group_size != -1 && (spec.group_size < 32 || spec.group_size % 32 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--group-size: ", spec.group_size,
                                                   " is not -1 (per channel) or a multiple of 32"));
  }
  if (spec.method == "awq-int4" && (spec.group_size < 32 || spec.group_size % 32 != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--group-size: ", spec.group_size, " is not a multiple of 32 (AWQ)"));
  }
  if (!gptq && (spec.desc_act || !spec.sym)) {
    return absl::InvalidArgumentError("--desc-act and --sym=false apply to the GPTQ methods only");
  }
  return absl::OkStatus();
}

absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeSpec& spec) {
  namespace fs = std::filesystem;
  RETURN_IF_ERROR(CheckQuantizeSpec(spec));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(in_dir));
  if (config.quant.quantized()) {
    return absl::InvalidArgumentError(
        absl::StrCat(in_dir, ": the checkpoint is already ", config.quant.Describe()));
  }
  ASSIGN_OR_RETURN(Json config_json, ReadJsonFile((fs::path(in_dir) / "config.json").string()));
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(in_dir));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": cannot create: ", ec.message()));
  if (fs::equivalent(in_dir, out_dir, ec)) {
    return absl::InvalidArgumentError("--out must not be the input folder");
  }

  const std::vector<TensorSpec> specs = AllTensors(config);
  std::vector<TensorToWrite> tensors;
  for (const TensorSpec& s : specs) {
    ASSIGN_OR_RETURN(TensorView t, checkpoint->Get(s.name, s.shape));
    if (!IsLinearWeight(s)) {
      tensors.push_back({s.name, t.dtype, t.shape, Bytes(t.data, t.nbytes)});
      continue;
    }
    const int64_t rows = s.shape[0], cols = s.shape[1];
    const std::string module = ModuleOf(s);
    const std::vector<float> w = ToF32(t);
    const bool four = spec.method == "gptq-int4" || spec.method == "awq-int4";
    if (rows % (four ? 8 : 4) != 0 || cols % 32 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor `", s.name, "`: shape ", ShapeString(s.shape), " does not pack (",
                       spec.method, " needs the output rows to be a multiple of ", four ? 8 : 4,
                       " and the input columns of 32)"));
    }
    if (spec.method == "gptq-int4" || spec.method == "gptq-int8") {
      Gptq(module, w, rows, cols, spec, spec.method == "gptq-int4" ? 4 : 8, &tensors);
    } else if (spec.method == "awq-int4") {
      Awq(module, w, rows, cols, spec, &tensors);
    } else {
      Fp8(module, w, rows, cols, spec.method, &tensors);
    }
  }
  RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), tensors));

  std::map<std::string, Json> members = config_json.object();
  members["quantization_config"] = QuantizationConfig(spec);
  {
    std::ofstream out(fs::path(out_dir) / "config.json", std::ios::binary | std::ios::trunc);
    out << Json::Object(std::move(members)).Dump();
    if (!out) return absl::InternalError(absl::StrCat(out_dir, "/config.json: write failed"));
  }
  for (const auto& entry : fs::directory_iterator(in_dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" ||
        name == "model.safetensors.index.json" ||
        (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0)) {
      continue;
    }
    fs::copy_file(entry.path(), fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat(name, ": cannot copy: ", ec.message()));
  }
  // The quantized model must read back: every layer through the loader.
  ASSIGN_OR_RETURN(ModelConfig written, LoadModelConfig(out_dir));
  ASSIGN_OR_RETURN(auto reread, Checkpoint::Open(out_dir));
  return MeasureModel(written, *reread).status();
}

}  // namespace strata
