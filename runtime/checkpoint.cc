#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/json.h"
#include "runtime/status_macros.h"

namespace strata {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One memory-mapped shard with its parsed header.
class SafetensorsFile {
 public:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;  // relative to the data section
  };

  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path,
                                                               const std::string& label) {
    auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
    file->label_ = label;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::NotFoundError(absl::StrCat(label, ": cannot open: ", std::strerror(errno)));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(label, ": cannot stat"));
    }
    file->size_ = static_cast<size_t>(st.st_size);
    if (file->size_ < 8) {
      ::close(fd);
      return absl::DataLossError(absl::StrCat(label, ": truncated: ", file->size_,
                                              " bytes, too short for a safetensors header"));
    }
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) {
      return absl::InternalError(absl::StrCat(label, ": mmap failed: ", std::strerror(errno)));
    }
    file->base_ = static_cast<const uint8_t*>(p);
    RETURN_IF_ERROR(file->ParseHeader());
    return file;
  }

  ~SafetensorsFile() {
    if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
  }

  const Entry* Find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  const uint8_t* data() const { return base_ + data_start_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::string& label() const { return label_; }

 private:
  SafetensorsFile() = default;

  absl::Status ParseHeader() {
    uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(base_[i]) << (8 * i);
    if (header_len > size_ - 8) {
      return absl::DataLossError(absl::StrCat(label_, ": header length ", header_len,
                                              " exceeds the file size ", size_,
                                              " (truncated or not a safetensors file)"));
    }
    data_start_ = 8 + header_len;
    const uint64_t data_size = size_ - data_start_;
    std::string_view text(reinterpret_cast<const char*>(base_ + 8), header_len);
    ASSIGN_OR_RETURN(Json header, ParseJson(text, absl::StrCat(label_, " header")));
    if (!header.is_object()) {
      return absl::DataLossError(absl::StrCat(label_, ": header is not a JSON object"));
    }
    for (const auto& entry : header.object()) {
      const std::string& name = entry.first;  // captured below (clang: no bindings)
      const Json& value = entry.second;
      if (name == "__metadata__") continue;
      auto bad = [&](const std::string& why) {
        return absl::DataLossError(absl::StrCat("tensor `", name, "` in ", label_, ": ", why));
      };
      const Json* dtype = value.Find("dtype");
      const Json* shape = value.Find("shape");
      const Json* offsets = value.Find("data_offsets");
      if (dtype == nullptr || !dtype->is_string() || shape == nullptr || !shape->is_array() ||
          offsets == nullptr || !offsets->is_array() || offsets->array().size() != 2) {
        return bad("header entry needs dtype, shape and data_offsets");
      }
      Entry e;
      auto parsed = ParseTensorDType(dtype->string_value());
      if (!parsed.ok()) return bad(std::string(parsed.status().message()));
      e.dtype = *parsed;
      uint64_t numel = 1;
      for (const Json& d : shape->array()) {
        if (!d.is_integer() || d.int_value() < 0) return bad("shape has a non-integer entry");
        e.shape.push_back(d.int_value());
        const auto n = static_cast<uint64_t>(d.int_value());
        // More elements than the data section has bytes cannot be right, and
        // checking here keeps the product from overflowing.
        if (n != 0 && numel > data_size / n) {
          return bad(absl::StrCat("shape ", value.Find("shape")->Dump(),
                                  " describes more elements than the file's ", data_size,
                                  " data bytes"));
        }
        numel *= n;
      }
      const Json& b = offsets->array()[0];
      const Json& en = offsets->array()[1];
      if (!b.is_integer() || !en.is_integer() || b.int_value() < 0 ||
          en.int_value() < b.int_value()) {
        return bad("data_offsets must be two increasing non-negative integers");
      }
      e.begin = static_cast<uint64_t>(b.int_value());
      e.end = static_cast<uint64_t>(en.int_value());
      if (e.end > data_size) {
        return bad(absl::StrCat("data ends at byte ", e.end,
                                " of the data section but the file "
                                "holds only ",
                                data_size, " (truncated file)"));
      }
      if (e.end - e.begin != numel * DTypeSize(e.dtype)) {
        return bad(absl::StrCat("data_offsets span ", e.end - e.begin, " bytes but shape ",
                                ShapeString(e.shape), " of ", DTypeName(e.dtype), " needs ",
                                numel * DTypeSize(e.dtype)));
      }
      entries_.emplace(name, std::move(e));
    }
    // No two tensors may share bytes: one written would change the other.
    std::vector<std::pair<const std::string*, const Entry*>> by_offset;
    for (const auto& [name, e] : entries_) {
      if (e.end > e.begin) by_offset.emplace_back(&name, &e);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const auto& [prev_name, prev] = by_offset[i - 1];
      const auto& [name, e] = by_offset[i];
      if (e->begin < prev->end) {
        return absl::DataLossError(absl::StrCat(
            "tensor `", *name, "` in ", label_, ": data_offsets [", e->begin, ", ", e->end,
            ") overlap those of tensor `", *prev_name, "` [", prev->begin, ", ", prev->end, ")"));
      }
    }
    return absl::OkStatus();
  }

  std::string label_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, Entry> entries_;
};

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(index)) {
    ASSIGN_OR_RETURN(Json json, ReadJsonFile(index.string()));
    const Json* map = json.Find("weight_map");
    if (map == nullptr || !map->is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": missing \"weight_map\" object"));
    }
    for (const auto& [name, file] : map->object()) {
      if (!file.is_string() || file.string_value().find('/') != std::string::npos) {
        return absl::DataLossError(absl::StrCat(index.string(), ": weight_map entry for `", name,
                                                "` must be a file name in the folder"));
      }
      ckpt->tensor_file_[name] = file.string_value();
    }
  } else if (fs::exists(single)) {
    ASSIGN_OR_RETURN(SafetensorsFile * shard, ckpt->Shard("model.safetensors"));
    for (const auto& [name, entry] : shard->entries()) {
      ckpt->tensor_file_[name] = "model.safetensors";
    }
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json in this folder"));
  }
  return ckpt;
}

absl::StatusOr<SafetensorsFile*> Checkpoint::Shard(const std::string& file) {
  auto it = shards_.find(file);
  if (it != shards_.end()) return it->second.get();
  const std::string path = (std::filesystem::path(dir_) / file).string();
  ASSIGN_OR_RETURN(auto shard, SafetensorsFile::Open(path, path));
  SafetensorsFile* raw = shard.get();
  shards_.emplace(file, std::move(shard));
  return raw;
}

std::vector<std::string> Checkpoint::MappedFiles() const {
  std::vector<std::string> files;
  for (const auto& [file, shard] : shards_) files.push_back(file);
  return files;
}

absl::StatusOr<TensorView> Checkpoint::Get(const std::string& name,
                                           const std::vector<int64_t>& expected_shape) {
  ASSIGN_OR_RETURN(TensorView v, GetRaw(name, expected_shape));
  if (!IsFloatDType(v.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor `", name, "` has dtype ", DTypeName(v.dtype),
        " where a float tensor (F32, F16, BF16) is expected; a quantized checkpoint needs its "
        "quantization_config in config.json"));
  }
  return v;
}

absl::StatusOr<TensorView> Checkpoint::GetRaw(const std::string& name,
                                              const std::vector<int64_t>& expected_shape) {
  auto it = tensor_file_.find(name);
  if (it == tensor_file_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor `", name, "` is missing from the checkpoint in ", dir_));
  }
  ASSIGN_OR_RETURN(SafetensorsFile * shard, Shard(it->second));
  const SafetensorsFile::Entry* e = shard->Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor `", name, "` is listed for ", it->second,
                                            " in the index but is not in ", shard->label()));
  }
  if (!expected_shape.empty() && e->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor `", name, "` in ", shard->label(),
                                                   ": shape ", ShapeString(e->shape),
                                                   ", config says ", ShapeString(expected_shape)));
  }
  TensorView v;
  v.name = name;
  v.dtype = e->dtype;
  v.shape = e->shape;
  v.data = shard->data() + e->begin;
  v.nbytes = e->end - e->begin;
  return v;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  std::map<std::string, Json> header;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    std::vector<Json> shape, offsets;
    for (int64_t d : t.shape) shape.push_back(Json::Integer(d));
    offsets.push_back(Json::Integer(static_cast<int64_t>(offset)));
    offset += t.bytes.empty() ? t.zero_bytes : t.bytes.size();
    offsets.push_back(Json::Integer(static_cast<int64_t>(offset)));
    header[t.name] = Json::Object({{"dtype", Json::String(std::string(DTypeName(t.dtype)))},
                                   {"shape", Json::Array(std::move(shape))},
                                   {"data_offsets", Json::Array(std::move(offsets))}});
  }
  header["__metadata__"] = Json::Object({{"format", Json::String("pt")}});
  std::string text = Json::Object(std::move(header)).Dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // keep the data section 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot create"));
  uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out.write(len_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const TensorToWrite& t : tensors) {
    if (t.bytes.empty() && t.zero_bytes > 0) {
      out.seekp(static_cast<std::streamoff>(t.zero_bytes), std::ios::cur);
      continue;
    }
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
  const auto end = static_cast<uintmax_t>(out.tellp());
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  // A file that ends in a hole needs its length set explicitly.
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) != end) std::filesystem::resize_file(path, end, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot extend: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace strata
