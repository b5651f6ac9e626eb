#include "runtime/quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/config.h"
#include "runtime/status_macros.h"

namespace strata {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": quantization_config field \"", field, "\": ", why));
}

absl::Status ReadNames(const Json* list, const std::string& source, const std::string& field,
                       std::vector<std::string>* out) {
  if (list == nullptr || list->is_null()) return absl::OkStatus();
  if (!list->is_array()) return FieldError(source, field, "expected a list of module names");
  for (const Json& n : list->array()) {
    if (!n.is_string()) return FieldError(source, field, "expected a list of module names");
    out->push_back(n.string_value());
  }
  return absl::OkStatus();
}

absl::Status ParseGptq(const Json& json, const std::string& source, QuantConfig* q) {
  const Json* bits = json.Find("bits");
  if (bits == nullptr || !bits->is_integer()) return FieldError(source, "bits", "missing");
  q->bits = static_cast<int>(bits->int_value());
  if (q->bits != 4 && q->bits != 8) {
    return FieldError(source, "bits", absl::StrCat(q->bits, " is not supported (4 or 8)"));
  }
  const Json* group = json.Find("group_size");
  if (group == nullptr || !group->is_integer()) {
    return FieldError(source, "group_size", "missing (an integer; -1 for per channel)");
  }
  const int64_t g = group->int_value();
  // The kernels widen 32 codes at a time within one group (CheckWidths).
  if (g != -1 && (g < 32 || g % 32 != 0)) {
    return FieldError(source, "group_size",
                      absl::StrCat(g, " is not supported (-1, or a multiple of 32 such as 128)"));
  }
  q->group_size = g == -1 ? 0 : g;
  q->desc_act = BoolOr(json, "desc_act", false);
  q->sym = BoolOr(json, "sym", true);
  if (const Json* f = json.Find("checkpoint_format"); f != nullptr && f->is_string()) {
    const std::string v = Lower(f->string_value());
    if (v != "gptq" && v != "gptq_v2") {
      return FieldError(source, "checkpoint_format",
                        absl::StrCat("\"", f->string_value(), "\" is not gptq or gptq_v2"));
    }
    q->gptq_v2 = v == "gptq_v2";
  }
  return ReadNames(json.Find("modules_to_not_convert"), source, "modules_to_not_convert",
                   &q->not_converted);
}

absl::Status ParseAwq(const Json& json, const std::string& source, QuantConfig* q) {
  const Json* bits = json.Find("bits");
  if (bits == nullptr) bits = json.Find("w_bit");
  if (bits == nullptr || !bits->is_integer()) return FieldError(source, "bits", "missing");
  q->bits = static_cast<int>(bits->int_value());
  if (q->bits != 4) {
    return FieldError(source, "bits", absl::StrCat(q->bits, " is not supported (AWQ is 4-bit)"));
  }
  const Json* group = json.Find("group_size");
  if (group == nullptr) group = json.Find("q_group_size");
  if (group == nullptr || !group->is_integer()) return FieldError(source, "group_size", "missing");
  const int64_t g = group->int_value();
  if (g < 32 || g % 32 != 0) {
    return FieldError(source, "group_size",
                      absl::StrCat(g, " is not supported (a multiple of 32 such as 128)"));
  }
  q->group_size = g;
  q->sym = false;
  if (!BoolOr(json, "zero_point", true)) {
    return FieldError(source, "zero_point", "false is not supported (AWQ GEMM has zero points)");
  }
  if (const Json* v = json.Find("version"); v != nullptr && v->is_string()) {
    if (Lower(v->string_value()) != "gemm") {
      return FieldError(
          source, "version",
          absl::StrCat("\"", v->string_value(), "\" is not supported (only the GEMM layout)"));
    }
  }
  return ReadNames(json.Find("modules_to_not_convert"), source, "modules_to_not_convert",
                   &q->not_converted);
}

absl::Status ParseFp8(const Json& json, const std::string& source, QuantConfig* q) {
  q->bits = 8;
  if (const Json* fmt = json.Find("fmt");
      fmt != nullptr && fmt->is_string() && Lower(fmt->string_value()) != "e4m3") {
    return FieldError(source, "fmt",
                      absl::StrCat("\"", fmt->string_value(), "\" is not supported (only e4m3)"));
  }
  if (const Json* scheme = json.Find("activation_scheme");
      scheme != nullptr && scheme->is_string()) {
    const std::string s = Lower(scheme->string_value());
    if (s != "dynamic" && s != "static") {
      return FieldError(source, "activation_scheme",
                        absl::StrCat("\"", scheme->string_value(), "\" is not dynamic or static"));
    }
    q->dynamic_activations = s == "dynamic";
  }
  q->fp8_scale = Fp8Scale::kTensor;  // or per channel, as the scale tensors' shape says
  if (const Json* block = json.Find("weight_block_size"); block != nullptr && !block->is_null()) {
    if (!block->is_array() || block->array().size() != 2 || !block->array()[0].is_integer() ||
        !block->array()[1].is_integer() || block->array()[0].int_value() <= 0 ||
        block->array()[1].int_value() < 32 || block->array()[1].int_value() % 32 != 0) {
      return FieldError(
          source, "weight_block_size",
          "expected [rows, columns], the columns a multiple of 32 such as [128, 128]");
    }
    q->fp8_scale = Fp8Scale::kBlock;
    q->block_rows = block->array()[0].int_value();
    q->block_cols = block->array()[1].int_value();
  }
  RETURN_IF_ERROR(ReadNames(json.Find("modules_to_not_convert"), source, "modules_to_not_convert",
                            &q->not_converted));
  return ReadNames(json.Find("ignored_layers"), source, "ignored_layers", &q->not_converted);
}

// compressed-tensors with float 8-bit weights: one config group whose
// "weights" say type float, 8 bits, strategy tensor / channel / block.
absl::Status ParseCompressed(const Json& json, const std::string& source, QuantConfig* q) {
  const Json* groups = json.Find("config_groups");
  if (groups == nullptr || !groups->is_object() || groups->object().empty()) {
    return FieldError(source, "config_groups", "missing");
  }
  if (groups->object().size() != 1) {
    return FieldError(source, "config_groups", "more than one group is not supported");
  }
  const auto& [name, group] = *groups->object().begin();
  const std::string field = absl::StrCat("config_groups.", name, ".weights");
  const Json* weights = group.Find("weights");
  if (weights == nullptr || !weights->is_object()) return FieldError(source, field, "missing");
  const Json* type = weights->Find("type");
  const Json* bits = weights->Find("num_bits");
  if (type == nullptr || !type->is_string() || type->string_value() != "float" || bits == nullptr ||
      !bits->is_integer() || bits->int_value() != 8) {
    return FieldError(source, field,
                      "only float 8-bit weights (FP8 E4M3) are supported from compressed-tensors");
  }
  q->bits = 8;
  const Json* strategy = weights->Find("strategy");
  const std::string s =
      strategy != nullptr && strategy->is_string() ? strategy->string_value() : "tensor";
  if (s == "tensor") {
    q->fp8_scale = Fp8Scale::kTensor;
  } else if (s == "channel") {
    q->fp8_scale = Fp8Scale::kChannel;
  } else if (s == "block") {
    const Json* block = weights->Find("block_structure");
    if (block == nullptr || !block->is_array() || block->array().size() != 2 ||
        !block->array()[0].is_integer() || !block->array()[1].is_integer() ||
        block->array()[0].int_value() <= 0 || block->array()[1].int_value() < 32 ||
        block->array()[1].int_value() % 32 != 0) {
      return FieldError(source, field + ".block_structure",
                        "expected [rows, columns], the columns a multiple of 32");
    }
    q->fp8_scale = Fp8Scale::kBlock;
    q->block_rows = block->array()[0].int_value();
    q->block_cols = block->array()[1].int_value();
  } else {
    return FieldError(source, field + ".strategy",
                      absl::StrCat("\"", s, "\" is not supported (tensor, channel or block)"));
  }
  if (const Json* acts = group.Find("input_activations"); acts != nullptr && acts->is_object()) {
    q->dynamic_activations = BoolOr(*acts, "dynamic", true);
  }
  return ReadNames(json.Find("ignore"), source, "ignore", &q->not_converted);
}

// The checkpoint's data as the packed form's element types.
std::vector<float> FloatsOf(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = ElementAsF32(t.dtype, t.data, i);
  return out;
}

int32_t Int32At(const TensorView& t, int64_t i) {
  int32_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + i * 4, 4);  // unaligned in general
  return v;
}

absl::Status ExpectDType(const TensorView& t, std::initializer_list<DType> allowed) {
  for (DType d : allowed) {
    if (t.dtype == d) return absl::OkStatus();
  }
  std::vector<std::string> names;
  for (DType d : allowed) names.push_back(DTypeName(d));
  return absl::InvalidArgumentError(absl::StrCat("tensor `", t.name, "`: dtype ",
                                                 DTypeName(t.dtype), ", expected ",
                                                 absl::StrJoin(names, " or ")));
}

absl::Status ShapeError(const TensorView& t, const std::vector<int64_t>& want,
                        const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("tensor `", t.name, "`: shape ",
                                                 ShapeString(t.shape), ", expected ",
                                                 ShapeString(want), " (", why, ")"));
}

absl::Status CheckWidths(const std::string& module, QuantFormat format, int64_t cols,
                         int64_t group) {
  // The kernels widen 32 codes at a time, within one group.
  const int64_t unit = 32;
  if (cols % unit != 0 || group % unit != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": ", QuantFormatName(format), " weights need the input width (", cols,
                     ") and the group size (", group, ") to be multiples of ", unit));
  }
  return absl::OkStatus();
}

// Stores code `q` at (row, col) of a packed weight.
void PutCode(PackedLinear* p, int64_t row, int64_t col, uint8_t q) {
  if (p->format == QuantFormat::kInt4) {
    const int64_t base = row * (p->cols / 2) + (col / 32) * 16;
    const int64_t j = col % 32;
    uint8_t& b = p->codes[base + (j % 16)];
    b = j < 16 ? static_cast<uint8_t>((b & 0xf0) | q) : static_cast<uint8_t>((b & 0x0f) | (q << 4));
  } else {
    p->codes[row * p->cols + col] = q;
  }
}

uint8_t GetCode(const Weight& w, int64_t row, int64_t col) {
  const auto* codes = static_cast<const uint8_t*>(w.data);
  if (w.quant == QuantFormat::kInt4) {
    const int64_t j = col % 32;
    const uint8_t b = codes[row * (w.cols / 2) + (col / 32) * 16 + (j % 16)];
    return j < 16 ? (b & 0x0f) : (b >> 4);
  }
  return codes[row * w.cols + col];
}

std::unique_ptr<PackedLinear> NewPacked(QuantFormat format, int64_t rows, int64_t cols,
                                        int64_t group, bool offsets) {
  auto p = std::make_unique<PackedLinear>();
  p->format = format;
  p->rows = rows;
  p->cols = cols;
  p->group_size = group;
  const int64_t groups = (cols + group - 1) / group;
  p->codes.assign(format == QuantFormat::kInt4 ? rows * cols / 2 : rows * cols, 0);
  p->scales.assign(rows * groups, 0.0f);
  if (offsets) p->offsets.assign(rows * groups, 0.0f);
  return p;
}

// GPTQ and AWQ: the integer formats with packed int32 codes and zeros.
absl::StatusOr<std::unique_ptr<PackedLinear>> LoadInteger(Checkpoint& ck, const QuantConfig& q,
                                                          const std::string& module, int64_t rows,
                                                          int64_t cols) {
  const bool awq = q.method == QuantMethod::kAwq;
  const int bits = q.bits;
  const int per = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  const int64_t group = q.group_size > 0 ? q.group_size : cols;
  const int64_t groups = (cols + group - 1) / group;
  const QuantFormat format = bits == 4 ? QuantFormat::kInt4 : QuantFormat::kInt8;
  const std::string what = absl::StrCat(awq ? "AWQ" : "GPTQ", " int", bits, " group ", group,
                                        " of a [", rows, ", ", cols, "] weight");
  RETURN_IF_ERROR(CheckWidths(module, format, cols, group));
  if (rows % per != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": ", rows, " output rows do not pack into int32s of ", per, " codes"));
  }
  ASSIGN_OR_RETURN(TensorView qweight, ck.GetRaw(module + ".qweight", {}));
  ASSIGN_OR_RETURN(TensorView qzeros, ck.GetRaw(module + ".qzeros", {}));
  ASSIGN_OR_RETURN(TensorView scales, ck.GetRaw(module + ".scales", {}));
  RETURN_IF_ERROR(ExpectDType(qweight, {DType::kI32}));
  RETURN_IF_ERROR(ExpectDType(qzeros, {DType::kI32}));
  RETURN_IF_ERROR(ExpectDType(scales, {DType::kF16, DType::kBF16, DType::kF32}));
  const std::vector<int64_t> want_qweight =
      awq ? std::vector<int64_t>{cols, rows / per} : std::vector<int64_t>{cols / per, rows};
  if (cols % per != 0 || qweight.shape != want_qweight) {
    return ShapeError(qweight, want_qweight, what);
  }
  const std::vector<int64_t> want_zeros = {groups, rows / per};
  if (qzeros.shape != want_zeros) return ShapeError(qzeros, want_zeros, what);
  const std::vector<int64_t> want_scales = {groups, rows};
  if (scales.shape != want_scales) return ShapeError(scales, want_scales, what);
  int64_t checkpoint_bytes = static_cast<int64_t>(qweight.nbytes + qzeros.nbytes + scales.nbytes);

  // Each input column's group, and the order that makes groups contiguous.
  std::vector<int32_t> group_of(cols);
  for (int64_t i = 0; i < cols; ++i) group_of[i] = static_cast<int32_t>(i / group);
  std::vector<int32_t> perm;
  if (!awq && ck.Has(module + ".g_idx")) {
    ASSIGN_OR_RETURN(TensorView g_idx, ck.GetRaw(module + ".g_idx", {cols}));
    RETURN_IF_ERROR(ExpectDType(g_idx, {DType::kI32}));
    checkpoint_bytes += static_cast<int64_t>(g_idx.nbytes);
    bool identity = true;
    for (int64_t i = 0; i < cols; ++i) {
      const int32_t g = Int32At(g_idx, i);
      if (g < 0 || g >= groups) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor `", g_idx.name, "`: entry ", i, " is group ", g, " of ", groups));
      }
      group_of[i] = g;
      identity = identity && g == i / group;
    }
    if (!identity) {
      perm.resize(cols);
      std::iota(perm.begin(), perm.end(), 0);
      std::stable_sort(perm.begin(), perm.end(),
                       [&](int32_t a, int32_t b) { return group_of[a] < group_of[b]; });
      for (int64_t j = 0; j < cols; ++j) {
        if (group_of[perm[j]] != j / group) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor `", g_idx.name, "`: group ", j / group, " does not have ", group,
                           " input columns (act order needs every group but the last to be full)"));
        }
      }
    }
  } else if (!awq && q.desc_act) {
    return absl::NotFoundError(absl::StrCat("tensor `", module,
                                            ".g_idx` is missing: desc_act is true in the "
                                            "quantization_config"));
  }

  auto p = NewPacked(format, rows, cols, group, /*offsets=*/true);
  p->checkpoint_bytes = checkpoint_bytes;
  // Where input column i sits in the packed codes.
  std::vector<int32_t> slot(cols);
  for (int64_t j = 0; j < cols; ++j) slot[perm.empty() ? j : perm[j]] = static_cast<int32_t>(j);
  p->perm = std::move(perm);
  // AWQ's nibble k holds output column order[k] of its eight.
  static constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column -> nibble
  auto shift_of = [&](int64_t out_col) {
    return awq ? kAwqNibble[out_col % 8] * 4 : static_cast<int>(out_col % per) * bits;
  };
  const std::vector<float> s = FloatsOf(scales);
  const int zero_bias = awq || q.gptq_v2 ? 0 : 1;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      const auto word = static_cast<uint32_t>(Int32At(qzeros, g * (rows / per) + r / per));
      const float zero = static_cast<float>(((word >> shift_of(r)) & mask) + zero_bias);
      const float scale = s[g * rows + r];
      p->scales[r * groups + g] = scale;
      p->offsets[r * groups + g] = -scale * zero;
    }
  }
  // Each packed word is read once; its codes go to their (row, slot).
  if (awq) {
    static constexpr int kAwqColumn[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble -> column
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t wr = 0; wr < rows / 8; ++wr) {
        const auto word = static_cast<uint32_t>(Int32At(qweight, i * (rows / 8) + wr));
        for (int k = 0; k < 8; ++k) {
          PutCode(p.get(), wr * 8 + kAwqColumn[k], slot[i],
                  static_cast<uint8_t>((word >> (4 * k)) & 0xf));
        }
      }
    }
  } else {
    for (int64_t wi = 0; wi < cols / per; ++wi) {
      for (int64_t r = 0; r < rows; ++r) {
        const auto word = static_cast<uint32_t>(Int32At(qweight, wi * rows + r));
        for (int k = 0; k < per; ++k) {
          PutCode(p.get(), r, slot[wi * per + k],
                  static_cast<uint8_t>((word >> (k * bits)) & mask));
        }
      }
    }
  }
  return p;
}

absl::StatusOr<std::unique_ptr<PackedLinear>> LoadFp8(Checkpoint& ck, const QuantConfig& q,
                                                      const TensorView& weight,
                                                      const std::string& module, int64_t rows,
                                                      int64_t cols) {
  const bool block = q.fp8_scale == Fp8Scale::kBlock;
  const int64_t group = block ? q.block_cols : cols;
  RETURN_IF_ERROR(CheckWidths(module, QuantFormat::kFp8, cols, group));
  const std::string scale_name =
      module + (ck.Has(module + ".weight_scale_inv") ? ".weight_scale_inv" : ".weight_scale");
  if (!ck.Has(scale_name)) {
    return absl::NotFoundError(absl::StrCat("tensor `", module,
                                            ".weight_scale` (or weight_scale_inv) is missing: `",
                                            weight.name, "` is FP8"));
  }
  ASSIGN_OR_RETURN(TensorView scale, ck.GetRaw(scale_name, {}));
  RETURN_IF_ERROR(ExpectDType(scale, {DType::kF32, DType::kBF16, DType::kF16}));
  const std::vector<float> s = FloatsOf(scale);
  const int64_t groups = (cols + group - 1) / group;
  auto p = NewPacked(QuantFormat::kFp8, rows, cols, group, /*offsets=*/false);
  p->checkpoint_bytes = static_cast<int64_t>(weight.nbytes + scale.nbytes);
  if (block) {
    const std::vector<int64_t> want = {(rows + q.block_rows - 1) / q.block_rows, groups};
    if (scale.shape != want) {
      return ShapeError(scale, want,
                        absl::StrCat("one scale per ", q.block_rows, "x", q.block_cols,
                                     " block of a [", rows, ", ", cols, "] weight"));
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < groups; ++g)
        p->scales[r * groups + g] = s[(r / q.block_rows) * groups + g];
    }
  } else if (static_cast<int64_t>(s.size()) == 1 &&
             (q.method != QuantMethod::kCompressedFp8 || q.fp8_scale == Fp8Scale::kTensor)) {
    std::fill(p->scales.begin(), p->scales.end(), s[0]);
  } else if (static_cast<int64_t>(s.size()) == rows &&
             (scale.shape == std::vector<int64_t>{rows, 1} ||
              scale.shape == std::vector<int64_t>{rows}) &&
             (q.method != QuantMethod::kCompressedFp8 || q.fp8_scale == Fp8Scale::kChannel)) {
    p->scales = s;
  } else {
    const std::vector<int64_t> want =
        q.fp8_scale == Fp8Scale::kChannel ? std::vector<int64_t>{rows, 1} : std::vector<int64_t>{1};
    return ShapeError(scale, want, "one scale per tensor, or one per output row");
  }
  std::memcpy(p->codes.data(), weight.data, p->codes.size());
  return p;
}

bool NotConverted(const QuantConfig& q, const std::string& module) {
  for (const std::string& n : q.not_converted) {
    if (module == n) return true;
    // Listed by a suffix ("lm_head", "mlp.down_proj") or as a name inside the module's.
    if (module.size() > n.size() && module.compare(module.size() - n.size(), n.size(), n) == 0 &&
        module[module.size() - n.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string QuantConfig::Describe() const {
  switch (method) {
    case QuantMethod::kNone:
      return "not quantized";
    case QuantMethod::kGptq:
    case QuantMethod::kAwq:
      return absl::StrCat(
          method == QuantMethod::kGptq ? "GPTQ" : "AWQ", " int", bits, ", ",
          group_size > 0 ? absl::StrCat("group ", group_size) : "per channel",
          desc_act ? ", act order" : "",
          method == QuantMethod::kGptq ? (sym ? ", symmetric" : ", asymmetric") : "");
    case QuantMethod::kFp8:
    case QuantMethod::kCompressedFp8:
      return absl::StrCat(
          "FP8 E4M3", method == QuantMethod::kCompressedFp8 ? " (compressed-tensors)" : "", ", ",
          fp8_scale == Fp8Scale::kBlock
              ? absl::StrCat(block_rows, "x", block_cols, " block scales")
              : (fp8_scale == Fp8Scale::kChannel ? "per-channel scales" : "per-tensor scales"),
          dynamic_activations ? ", activations unquantized (dynamic in the config)"
                              : ", activations unquantized (static in the config)");
  }
  return "?";
}

absl::StatusOr<QuantConfig> ParseQuantConfig(const Json& json, const std::string& source) {
  QuantConfig q;
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": quantization_config is not a JSON object"));
  }
  const Json* method = json.Find("quant_method");
  if (method == nullptr || !method->is_string()) {
    return FieldError(source, "quant_method", "missing");
  }
  const std::string m = Lower(method->string_value());
  if (m == "gptq") {
    q.method = QuantMethod::kGptq;
    RETURN_IF_ERROR(ParseGptq(json, source, &q));
  } else if (m == "awq") {
    q.method = QuantMethod::kAwq;
    RETURN_IF_ERROR(ParseAwq(json, source, &q));
  } else if (m == "fp8") {
    q.method = QuantMethod::kFp8;
    RETURN_IF_ERROR(ParseFp8(json, source, &q));
  } else if (m == "compressed-tensors") {
    q.method = QuantMethod::kCompressedFp8;
    RETURN_IF_ERROR(ParseCompressed(json, source, &q));
  } else {
    return FieldError(source, "quant_method",
                      absl::StrCat("\"", method->string_value(),
                                   "\" is not supported (gptq, awq, fp8, compressed-tensors)"));
  }
  return q;
}

int64_t PackedBytes(const QuantLayout& layout, int64_t rows, int64_t cols) {
  Weight w;
  w.rows = rows;
  w.cols = cols;
  w.quant = layout.format;
  w.group_size = layout.group_size;
  static const float kSome = 0;
  static const int32_t kPerm = 0;
  w.scales = &kSome;
  w.offsets = layout.format == QuantFormat::kFp8 ? nullptr : &kSome;
  w.perm = layout.perm ? &kPerm : nullptr;
  return w.bytes();
}

Weight PackedLinear::AsWeight() const {
  Weight w;
  w.dtype = DType::kF32;
  w.rows = rows;
  w.cols = cols;
  w.data = codes.data();
  w.quant = format;
  w.group_size = group_size;
  w.scales = scales.data();
  w.offsets = offsets.empty() ? nullptr : offsets.data();
  w.perm = perm.empty() ? nullptr : perm.data();
  return w;
}

absl::StatusOr<std::unique_ptr<PackedLinear>> LoadQuantizedLinear(Checkpoint& checkpoint,
                                                                  const QuantConfig& config,
                                                                  const std::string& module,
                                                                  int64_t rows, int64_t cols) {
  const std::string weight = module + ".weight";
  if (checkpoint.Has(module + ".qweight")) {
    if (config.method != QuantMethod::kGptq && config.method != QuantMethod::kAwq) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor `", module, ".qweight` is a GPTQ/AWQ tensor, but config.json's ",
          config.quantized() ? absl::StrCat("quantization_config is ", config.Describe())
                             : std::string("has no quantization_config")));
    }
    if (NotConverted(config, module)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor `", module, ".qweight`: the module is listed as not converted"));
    }
    return LoadInteger(checkpoint, config, module, rows, cols);
  }
  if (!checkpoint.Has(weight) &&
      (config.method == QuantMethod::kGptq || config.method == QuantMethod::kAwq)) {
    return absl::NotFoundError(absl::StrCat("tensor `", module, ".qweight` (", config.Describe(),
                                            ") is missing from the checkpoint"));
  }
  ASSIGN_OR_RETURN(TensorView t, checkpoint.GetRaw(weight, {rows, cols}));
  if (t.dtype == DType::kF8E4M3) {
    if (config.method != QuantMethod::kFp8 && config.method != QuantMethod::kCompressedFp8) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor `", weight, "` is FP8, but config.json's ",
          config.quantized() ? absl::StrCat("quantization_config is ", config.Describe())
                             : std::string("has no quantization_config")));
    }
    return LoadFp8(checkpoint, config, t, module, rows, cols);
  }
  if (!IsFloatDType(t.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor `", weight, "` has dtype ", DTypeName(t.dtype),
                     "; a linear weight is F32, F16, BF16 or F8_E4M3"));
  }
  return std::unique_ptr<PackedLinear>();
}

absl::StatusOr<LinearBytes> MeasureLinear(Checkpoint& checkpoint, const QuantConfig& config,
                                          const std::string& module, int64_t rows, int64_t cols) {
  LinearBytes b;
  if (config.quantized() && checkpoint.Has(module + ".qweight")) {
    const bool awq = config.method == QuantMethod::kAwq;
    for (const char* part : {".qweight", ".qzeros", ".scales", ".g_idx"}) {
      if (!checkpoint.Has(module + part)) continue;
      ASSIGN_OR_RETURN(TensorView t, checkpoint.GetRaw(module + part, {}));
      b.checkpoint += static_cast<int64_t>(t.nbytes);
    }
    QuantLayout layout;
    layout.format = config.bits == 4 ? QuantFormat::kInt4 : QuantFormat::kInt8;
    layout.group_size = config.group_size > 0 ? config.group_size : cols;
    layout.perm = !awq && config.desc_act;
    b.loaded = PackedBytes(layout, rows, cols);
    return b;
  }
  ASSIGN_OR_RETURN(TensorView t, checkpoint.GetRaw(module + ".weight", {rows, cols}));
  b.checkpoint = static_cast<int64_t>(t.nbytes);
  if (t.dtype == DType::kF8E4M3) {
    for (const char* part : {".weight_scale", ".weight_scale_inv"}) {
      if (!checkpoint.Has(module + part)) continue;
      ASSIGN_OR_RETURN(TensorView s, checkpoint.GetRaw(module + part, {}));
      b.checkpoint += static_cast<int64_t>(s.nbytes);
    }
    QuantLayout layout;
    layout.format = QuantFormat::kFp8;
    layout.group_size = config.fp8_scale == Fp8Scale::kBlock ? config.block_cols : cols;
    b.loaded = PackedBytes(layout, rows, cols);
  } else {
    b.loaded = b.checkpoint;
  }
  return b;
}

float DequantizedAt(const Weight& w, int64_t row, int64_t col) {
  if (w.quant == QuantFormat::kNone) return ElementAsF32(w.dtype, w.data, row * w.cols + col);
  int64_t j = col;
  if (w.perm != nullptr) {
    for (j = 0; j < w.cols && w.perm[j] != col; ++j) {
    }
  }
  const int64_t g = row * w.groups() + j / w.group_size;
  const uint8_t code = GetCode(w, row, j);
  if (w.quant == QuantFormat::kFp8) return w.scales[g] * Fp8E4M3ToF32(code);
  return w.scales[g] * static_cast<float>(code) + w.offsets[g];
}

}  // namespace strata
