// The JSON document model of the files Strata reads: config.json,
// tokenizer_config.json, generation_config.json, tokenizer.json, safetensors
// headers and their index. Parsing and serialising are nlohmann/json's
// (json_document.cc adapts its tree to this one): strict RFC 8259, so
// leading zeros, NaN/Infinity, invalid UTF-8 and numbers out of range are
// errors naming the file and byte; nesting is bounded at 128 levels. Integers that fit in int64 are kept exactly (tensor
// offsets can exceed 2^53 in principle). Values are immutable after parsing;
// a parsed document is safe to read from many threads.
#ifndef STRATA_RUNTIME_JSON_H_
#define STRATA_RUNTIME_JSON_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

class Json {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;
  static Json Null() { return Json(); }
  static Json Bool(bool b);
  static Json Number(double d);
  static Json Integer(int64_t i);
  static Json String(std::string s);
  static Json Array(std::vector<Json> items);
  static Json Object(std::map<std::string, Json> members);

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_number() const { return kind_ == Kind::kNumber; }
  bool is_integer() const { return kind_ == Kind::kNumber && is_integer_; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  bool bool_value() const { return bool_; }
  double number_value() const { return is_integer_ ? static_cast<double>(int_) : double_; }
  // An integer's value; a non-integral number's, truncated and clamped to
  // the int64 range (never the undefined conversion of an out-of-range
  // double); 0 for NaN.
  int64_t int_value() const;
  const std::string& string_value() const { return string_; }
  const std::vector<Json>& array() const { return array_; }
  const std::map<std::string, Json>& object() const { return object_; }

  // Member lookup on an object; nullptr when absent or when this is not an
  // object.
  const Json* Find(std::string_view key) const;

  // Serialises compactly (keys in sorted order), for writing files.
  std::string Dump() const;

 private:
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  bool is_integer_ = false;
  int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  std::vector<Json> array_;
  std::map<std::string, Json> object_;
};

// Parses `text`. Errors carry the byte offset and what was expected; `what`
// names the source (a file path) in the message.
absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what);

// Reads and parses a whole file.
absl::StatusOr<Json> ReadJsonFile(const std::string& path);

}  // namespace strata

#endif  // STRATA_RUNTIME_JSON_H_
