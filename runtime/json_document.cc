// Json: an immutable document read and written by nlohmann/json. No JSON is
// lexed or parsed here: nlohmann parses (strictly, as RFC 8259 says: no
// leading zeros, no NaN or Infinity, UTF-8 only) and this file turns its
// tree into Json's, with the three things the loaders need on top: a depth
// bound, numbers that fit, and errors that say what was wrong and where.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/json.h"

namespace strata {
namespace {

using Tree = nlohmann::json;

constexpr int kMaxDepth = 128;

// Thrown by the parse callback past kMaxDepth (caught in ParseJson).
struct TooDeep {};

// Why nlohmann refused `text` at byte `at`, in words a user can act on.
std::string Why(const std::string& message, std::string_view text, size_t at) {
  if (message.find("UTF-8") != std::string::npos) return "invalid UTF-8";
  if (message.find("overflow") != std::string::npos) return "number out of range";
  // The token where parsing stopped (nlohmann reports the byte after it).
  size_t begin = std::min(at, text.size());
  while (begin > 0 && std::string_view("[{:, \t\r\n").find(text[begin - 1]) ==
                          std::string_view::npos) {
    --begin;
  }
  const std::string_view token = text.substr(begin, 12);
  if (token.starts_with("NaN") || token.starts_with("Infinity") ||
      token.starts_with("-Infinity") || token.starts_with("-N")) {
    return "NaN and Infinity are not JSON";
  }
  const size_t digits = token.starts_with("-") ? 1 : 0;
  if (token.size() > digits + 1 && token[digits] == '0' && token[digits + 1] >= '0' &&
      token[digits + 1] <= '9') {
    return "a number with a leading zero is not JSON";
  }
  return "not valid JSON";
}

absl::StatusOr<Json> FromTree(const Tree& t, const std::string& what) {
  switch (t.type()) {
    case Tree::value_t::null:
      return Json::Null();
    case Tree::value_t::boolean:
      return Json::Bool(t.get<bool>());
    case Tree::value_t::number_integer:
      return Json::Integer(t.get<int64_t>());
    case Tree::value_t::number_unsigned: {
      const uint64_t u = t.get<uint64_t>();
      // Past int64 a number is kept, but not as an integer (Llama 3's
      // model_max_length is 10^30).
      if (u > static_cast<uint64_t>(INT64_MAX)) return Json::Number(static_cast<double>(u));
      return Json::Integer(static_cast<int64_t>(u));
    }
    case Tree::value_t::number_float: {
      const double d = t.get<double>();
      if (!std::isfinite(d)) return absl::InvalidArgumentError(absl::StrCat(what, ": number out of range"));
      return Json::Number(d);
    }
    case Tree::value_t::string:
      return Json::String(t.get<std::string>());
    case Tree::value_t::array: {
      std::vector<Json> items;
      items.reserve(t.size());
      for (const Tree& item : t) {
        absl::StatusOr<Json> j = FromTree(item, what);
        if (!j.ok()) return j.status();
        items.push_back(*std::move(j));
      }
      return Json::Array(std::move(items));
    }
    case Tree::value_t::object: {
      std::map<std::string, Json> members;
      for (auto it = t.begin(); it != t.end(); ++it) {
        absl::StatusOr<Json> j = FromTree(it.value(), what);
        if (!j.ok()) return j.status();
        members.emplace(it.key(), *std::move(j));
      }
      return Json::Object(std::move(members));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  }
}

Tree ToTree(const Json& j) {
  switch (j.kind()) {
    case Json::Kind::kNull:
      return nullptr;
    case Json::Kind::kBool:
      return j.bool_value();
    case Json::Kind::kNumber:
      return j.is_integer() ? Tree(j.int_value()) : Tree(j.number_value());
    case Json::Kind::kString:
      return j.string_value();
    case Json::Kind::kArray: {
      Tree out = Tree::array();
      for (const Json& item : j.array()) out.push_back(ToTree(item));
      return out;
    }
    case Json::Kind::kObject: {
      Tree out = Tree::object();
      for (const auto& [key, value] : j.object()) out[key] = ToTree(value);
      return out;
    }
  }
  return nullptr;
}

}  // namespace

Json Json::Bool(bool b) {
  Json j;
  j.kind_ = Kind::kBool;
  j.bool_ = b;
  return j;
}
Json Json::Number(double d) {
  Json j;
  j.kind_ = Kind::kNumber;
  j.double_ = d;
  return j;
}
Json Json::Integer(int64_t i) {
  Json j;
  j.kind_ = Kind::kNumber;
  j.is_integer_ = true;
  j.int_ = i;
  return j;
}
Json Json::String(std::string s) {
  Json j;
  j.kind_ = Kind::kString;
  j.string_ = std::move(s);
  return j;
}
Json Json::Array(std::vector<Json> items) {
  Json j;
  j.kind_ = Kind::kArray;
  j.array_ = std::move(items);
  return j;
}
Json Json::Object(std::map<std::string, Json> members) {
  Json j;
  j.kind_ = Kind::kObject;
  j.object_ = std::move(members);
  return j;
}

const Json* Json::Find(std::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  auto it = object_.find(std::string(key));
  return it == object_.end() ? nullptr : &it->second;
}

int64_t Json::int_value() const {
  if (is_integer_) return int_;
  if (std::isnan(double_)) return 0;
  // 2^63 is exactly representable; anything at or past it does not fit.
  if (double_ >= 9223372036854775808.0) return INT64_MAX;
  if (double_ <= -9223372036854775808.0) return INT64_MIN;
  return static_cast<int64_t>(double_);
}

std::string Json::Dump() const {
  // Compact, keys in sorted order; bytes that are not UTF-8 become U+FFFD.
  return ToTree(*this).dump(-1, ' ', false, Tree::error_handler_t::replace);
}

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what_view) {
  const std::string what(what_view);
  Tree tree;
  try {
    tree = Tree::parse(text.begin(), text.end(),
                       [](int depth, Tree::parse_event_t, Tree&) {
                         if (depth > kMaxDepth) throw TooDeep{};
                         return true;
                       });
  } catch (const TooDeep&) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": nesting deeper than ", kMaxDepth, " levels"));
  } catch (const Tree::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": byte ", e.byte, ": ",
                                                   Why(e.what(), text, e.byte), " (", e.what(),
                                                   ")"));
  } catch (const Tree::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", Why(e.what(), text, text.size()), " (", e.what(), ")"));
  }
  return FromTree(tree, what);
}

absl::StatusOr<Json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseJson(buffer.str(), path);
}

}  // namespace strata
