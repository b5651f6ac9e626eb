// Jinja's filters and tests, the Python methods templates call on str, list
// and dict, and transformers' globals. Semantics follow Jinja2 3.1 and
// Python 3 (string case and whitespace over code points; sort/unique/min/max
// case-insensitive by default, as Jinja's are).
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/jinja/interpreter.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer/unicode.h"

namespace strata::jinja {
namespace {

absl::Status Error(const std::string& message) { return absl::InvalidArgumentError(message); }

bool PySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// str.strip/lstrip/rstrip: `chars` null strips whitespace.
std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::vector<unicode::Char> cs = unicode::Decode(s);
  std::set<char32_t> set;
  const bool whitespace = chars == nullptr || chars->is_none() || chars->is_undefined();
  if (!whitespace) {
    const auto strip = unicode::Decode(chars->Str());
    for (size_t i = 0; i + 1 < strip.size(); ++i) set.insert(strip[i].cp);
  }
  auto drop = [&](char32_t c) { return whitespace ? PySpace(c) : set.count(c) > 0; };
  size_t begin = 0, end = cs.size() - 1;
  if (left) {
    while (begin < end && drop(cs[begin].cp)) ++begin;
  }
  if (right) {
    while (end > begin && drop(cs[end - 1].cp)) --end;
  }
  return s.substr(cs[begin].offset, cs[end].offset - cs[begin].offset);
}

// Python's str.upper/lower/title/capitalize: full case mappings (so 'ß'
// upper-cases to "SS"), from ICU's Unicode data.
enum class Case { kUpper, kLower, kTitle };

void AppendMapped(char32_t c, Case to, std::string* out) {
  UChar src[2];
  int32_t n = 0;
  U16_APPEND_UNSAFE(src, n, c);
  UChar dst[8];
  UErrorCode err = U_ZERO_ERROR;
  int32_t m = 0;
  switch (to) {
    case Case::kUpper:
      m = u_strToUpper(dst, 8, src, n, "", &err);
      break;
    case Case::kLower:
      m = u_strToLower(dst, 8, src, n, "", &err);
      break;
    case Case::kTitle:
      m = u_strToTitle(dst, 8, src, n, nullptr, "", &err);
      break;
  }
  if (U_FAILURE(err)) {
    unicode::AppendUtf8(c, out);
    return;
  }
  for (int32_t i = 0; i < m;) {
    UChar32 cp;
    U16_NEXT(dst, i, m, cp);
    unicode::AppendUtf8(static_cast<char32_t>(cp), out);
  }
}

bool IsCased(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASED); }

// Maps every character: `first` for the first one (capitalize) or for each
// one after an uncased character (title), `rest` for the others.
std::string MapCase(const std::string& s, Case first, Case rest, bool words) {
  std::string out;
  const auto cs = unicode::Decode(s);
  bool previous_cased = false;
  for (size_t i = 0; i + 1 < cs.size(); ++i) {
    const char32_t c = cs[i].cp;
    if (c == unicode::kInvalid) {
      out += s[cs[i].offset];
      previous_cased = false;
      continue;
    }
    const bool starts = words ? !previous_cased : i == 0;
    AppendMapped(c, starts ? first : rest, &out);
    previous_cased = IsCased(c);
  }
  return out;
}

std::string ToUpper(const std::string& s) { return MapCase(s, Case::kUpper, Case::kUpper, false); }
std::string ToLower(const std::string& s) { return MapCase(s, Case::kLower, Case::kLower, false); }
std::string Title(const std::string& s) { return MapCase(s, Case::kTitle, Case::kLower, true); }
// Python 3.8+: the first character title-cased, the rest lower-cased.
std::string Capitalize(const std::string& s) {
  return MapCase(s, Case::kTitle, Case::kLower, false);
}

// str.split(sep=None, maxsplit=-1) and rsplit.
absl::StatusOr<Value> Split(const std::string& s, const Value* sep, int64_t maxsplit, bool right) {
  List parts;
  if (sep == nullptr || sep->is_none()) {
    // Runs of whitespace; no empty strings.
    std::vector<std::pair<size_t, size_t>> words;
    const auto cs = unicode::Decode(s);
    size_t i = 0;
    while (i + 1 < cs.size()) {
      while (i + 1 < cs.size() && PySpace(cs[i].cp)) ++i;
      if (i + 1 >= cs.size()) break;
      size_t j = i;
      while (j + 1 < cs.size() && !PySpace(cs[j].cp)) ++j;
      words.emplace_back(cs[i].offset, cs[j].offset);
      i = j;
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
      if (!right) {
        for (int64_t k = 0; k < maxsplit; ++k) {
          parts.emplace_back(s.substr(words[k].first, words[k].second - words[k].first));
        }
        parts.emplace_back(Strip(s.substr(words[maxsplit].first), nullptr, false, true));
      } else {
        const size_t first = words.size() - maxsplit;
        parts.emplace_back(Strip(s.substr(0, words[first - 1].second), nullptr, true, false));
        for (size_t k = first; k < words.size(); ++k) {
          parts.emplace_back(s.substr(words[k].first, words[k].second - words[k].first));
        }
      }
      return Value::MakeList(std::move(parts));
    }
    for (const auto& [b, e] : words) parts.emplace_back(s.substr(b, e - b));
    return Value::MakeList(std::move(parts));
  }
  if (!sep->is_string()) return Error("split(): the separator must be a string");
  const std::string& d = sep->as_string();
  if (d.empty()) return Error("split(): empty separator");
  std::vector<std::string> pieces;
  size_t at = 0;
  while (true) {
    const size_t next = s.find(d, at);
    if (next == std::string::npos) break;
    pieces.push_back(s.substr(at, next - at));
    at = next + d.size();
  }
  pieces.push_back(s.substr(at));
  if (maxsplit >= 0 && static_cast<int64_t>(pieces.size()) > maxsplit + 1) {
    std::vector<std::string> merged;
    if (!right) {
      merged.assign(pieces.begin(), pieces.begin() + maxsplit);
      std::vector<std::string> rest(pieces.begin() + maxsplit, pieces.end());
      merged.push_back(absl::StrJoin(rest, d));
    } else {
      const size_t keep = pieces.size() - maxsplit;
      std::vector<std::string> rest(pieces.begin(), pieces.begin() + keep);
      merged.push_back(absl::StrJoin(rest, d));
      merged.insert(merged.end(), pieces.begin() + keep, pieces.end());
    }
    pieces = std::move(merged);
  }
  for (std::string& p : pieces) parts.emplace_back(std::move(p));
  return Value::MakeList(std::move(parts));
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` around every character.
    const auto chars = CodePoints(s);
    int64_t done = 0;
    for (const std::string& c : chars) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += c;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t at = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t next = s.find(from, at);
    if (next == std::string::npos) break;
    out += s.substr(at, next - at) + to;
    at = next + from.size();
    ++done;
  }
  return out + s.substr(at);
}

int64_t IntArg(const Args& args, size_t i, const std::string& name, int64_t fallback) {
  const Value* v = args.Get(i, name);
  return v != nullptr && v->is_number() ? v->as_int() : fallback;
}
bool BoolArg(const Args& args, size_t i, const std::string& name, bool fallback) {
  const Value* v = args.Get(i, name);
  return v != nullptr ? v->Truthy() : fallback;
}

// Items of an iterable as Jinja iterates them.
absl::StatusOr<List> Items(const Value& v) {
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    List keys;
    for (const auto& [k, x] : v.dict().items) keys.push_back(k);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (std::string& c : CodePoints(v.as_string())) chars.emplace_back(std::move(c));
    return chars;
  }
  if (v.is_undefined()) return List{};
  return Error(absl::StrCat("\'", v.TypeName(), "' object is not iterable"));
}

// obj.attribute with Jinja's dotted paths ("a.b") and integer parts.
absl::StatusOr<Value> Attribute(Interpreter& in, const Value& obj, const std::string& path) {
  Value v = obj;
  size_t at = 0;
  while (at <= path.size()) {
    const size_t dot = path.find('.', at);
    const std::string part =
        path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    int64_t index = 0;
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric) index = std::stoll(part);
    if (v.is_undefined()) return v;
    ASSIGN_OR_RETURN(v, numeric ? in.GetItem(v, Value(index)) : in.GetItem(v, Value(part)));
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  return v;
}

// The sort key Jinja uses: strings lowercased unless case-sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(ToLower(v.as_string()));
  return v;
}

absl::StatusOr<Value> Sorted(Interpreter& in, List items, bool reverse, bool case_sensitive,
                             const Value* attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    Value key = item;
    if (attribute != nullptr && !attribute->is_none()) {
      ASSIGN_OR_RETURN(key, Attribute(in, item, attribute->Str()));
    }
    keyed.emplace_back(SortKey(key, case_sensitive), std::move(item));
  }
  absl::Status error;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    absl::StatusOr<bool> lt = reverse ? Less(b.first, a.first) : Less(a.first, b.first);
    if (!lt.ok()) {
      error = lt.status();
      return false;
    }
    return *lt;
  });
  RETURN_IF_ERROR(error);
  List out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::MakeList(std::move(out));
}

// select/reject/selectattr/rejectattr: `args` from `first` name a test and
// its arguments (none: truthiness).
absl::StatusOr<Value> SelectReject(Interpreter& in, const Value& v, const Args& args, bool select,
                                   bool by_attribute) {
  ASSIGN_OR_RETURN(List items, Items(v));
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty()) return Error("selectattr/rejectattr need an attribute");
    attribute = args.positional[next++].Str();
  }
  std::string test;
  Args test_args;
  if (next < args.positional.size()) {
    test = args.positional[next++].Str();
    test_args.positional.assign(args.positional.begin() + next, args.positional.end());
  }
  List out;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attribute) {
      ASSIGN_OR_RETURN(subject, Attribute(in, item, attribute));
    }
    bool pass = subject.Truthy();
    if (!test.empty()) {
      ASSIGN_OR_RETURN(pass, in.ApplyTest(test, subject, test_args));
    }
    if (pass == select) out.push_back(item);
  }
  return Value::MakeList(std::move(out));
}

std::string Indent(const std::string& s, const std::string& pad, bool first, bool blank) {
  std::string out;
  size_t at = 0;
  bool is_first = true;
  while (true) {
    const size_t nl = s.find('\n', at);
    const std::string line = s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    const bool add = (!is_first || first) && (blank || !Strip(line, nullptr, true, true).empty());
    if (add) out += pad;
    out += line;
    if (nl == std::string::npos) break;
    out += '\n';
    at = nl + 1;
    is_first = false;
  }
  return out;
}

absl::StatusOr<Value> Round(const Value& v, const Args& args) {
  const int64_t precision = IntArg(args, 0, "precision", 0);
  const Value* method = args.Get(1, "method");
  const std::string how = method != nullptr ? method->Str() : "common";
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  double r = 0;
  if (how == "common") {
    r = std::nearbyint(x);  // Python's round(): halves to even
  } else if (how == "ceil") {
    r = std::ceil(x);
  } else if (how == "floor") {
    r = std::floor(x);
  } else {
    return Error("round: method must be common, ceil or floor");
  }
  return Value(r / scale);
}

}  // namespace

absl::StatusOr<std::string> PercentFormat(const std::string& f, const List& values) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%' || i + 1 >= f.size()) {
      out += f[i];
      continue;
    }
    const char c = f[++i];
    if (c == '%') {
      out += '%';
    } else if (c == 's' || c == 'd' || c == 'r' || c == 'i') {
      if (next >= values.size()) return Error("not enough arguments for format string");
      const Value& v = values[next++];
      out += c == 'r' ? v.Repr() : (c == 's' ? v.Str() : std::to_string(v.as_int()));
    } else {
      return Error(std::string("unsupported format character '") + c + "'");
    }
  }
  return out;
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const List& x = a.list();
    const List& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return Error("'<' not supported between instances of '" + a.TypeName() + "' and '" +
               b.TypeName() + "'");
}

absl::StatusOr<Value> Filter(Interpreter& in, const std::string& name, const Value& v,
                             const Args& args) {
  const std::string_view n = name;  // compares lengths first
  if (n == "trim") return Value(Strip(v.Str(), args.Get(0, "chars"), true, true));
  if (n == "upper") return Value(ToUpper(v.Str()));
  if (n == "lower") return Value(ToLower(v.Str()));
  if (n == "title") return Value(Title(v.Str()));
  if (n == "capitalize") return Value(Capitalize(v.Str()));
  if (n == "string") return Value(v.Str());
  if (n == "safe" || n == "e" || n == "escape" || n == "forceescape") {
    if (n == "safe") return v;
    std::string out;
    for (char c : v.Str()) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&#34;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          out += c;
      }
    }
    return Value(std::move(out));
  }
  if (n == "length" || n == "count") {
    if (v.is_string()) return Value(CodePointCount(v.as_string()));
    if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
    if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().items.size()));
    if (v.is_undefined()) return Value(0);
    return Error("object of type '" + v.TypeName() + "' has no len()");
  }
  if (n == "tojson") {
    const Value* indent = args.Get(0, "indent");
    const Value* sort_keys = args.Get(99, "sort_keys");
    ASSIGN_OR_RETURN(std::string json,
                     ToJson(v, indent != nullptr && indent->is_number() ? indent->as_int() : -1,
                            sort_keys != nullptr && sort_keys->Truthy()));
    return Value(std::move(json));
  }
  if (n == "replace") {
    const Value* from = args.Get(0, "old");
    const Value* to = args.Get(1, "new");
    if (from == nullptr || to == nullptr) return Error("replace() needs two arguments");
    return Value(Replace(v.Str(), from->Str(), to->Str(), IntArg(args, 2, "count", -1)));
  }
  if (n == "join") {
    const Value* sep = args.Get(0, "d");
    const Value* attribute = args.Get(1, "attribute");
    ASSIGN_OR_RETURN(List items, Items(v));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0 && sep != nullptr) out += sep->Str();
      Value item = items[i];
      if (attribute != nullptr) {
        ASSIGN_OR_RETURN(item, Attribute(in, item, attribute->Str()));
      }
      out += item.Str();
    }
    return Value(std::move(out));
  }
  if (n == "default" || n == "d") {
    const Value* fallback = args.Get(0, "default_value");
    const bool boolean = BoolArg(args, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.Truthy())) {
      return fallback != nullptr ? *fallback : Value("");
    }
    return v;
  }
  if (n == "first" || n == "last") {
    ASSIGN_OR_RETURN(List items, Items(v));
    if (items.empty()) return Value::Undefined();
    return n == "first" ? items.front() : items.back();
  }
  if (n == "list") {
    ASSIGN_OR_RETURN(List items, Items(v));
    return Value::MakeList(std::move(items));
  }
  if (n == "int") {
    const int64_t fallback = IntArg(args, 0, "default", 0);
    if (v.is_number()) return Value(v.as_int());
    if (v.is_string()) {
      const std::string s = Strip(v.as_string(), nullptr, true, true);
      try {
        size_t used = 0;
        const int64_t r = std::stoll(s, &used, static_cast<int>(IntArg(args, 1, "base", 10)));
        if (used == s.size()) return Value(r);
        const double d = std::stod(s, &used);
        if (used == s.size()) return Value(static_cast<int64_t>(d));
      } catch (...) {
      }
    }
    return Value(fallback);
  }
  if (n == "float") {
    const Value* fallback = args.Get(0, "default");
    if (v.is_number()) return Value(v.as_float());
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string s = Strip(v.as_string(), nullptr, true, true);
        const double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      } catch (...) {
      }
    }
    return fallback != nullptr ? Value(fallback->as_float()) : Value(0.0);
  }
  if (n == "abs") {
    if (!v.is_number()) return Error("bad operand type for abs(): '" + v.TypeName() + "'");
    return v.is_float() ? Value(std::fabs(v.as_float()))
                        : Value(static_cast<int64_t>(std::llabs(v.as_int())));
  }
  if (n == "round") return Round(v, args);
  if (n == "items" || n == "dictsort") {
    if (v.is_undefined()) return Value::MakeList();
    if (!v.is_dict()) return Error(name + "(): expected a dict, got " + v.TypeName());
    List pairs;
    for (const auto& [k, x] : v.dict().items) pairs.push_back(Value::MakeTuple({k, x}));
    if (n == "items") return Value::MakeList(std::move(pairs));
    const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
    const Value* by = args.Get(1, "by");
    const bool by_value = by != nullptr && by->Str() == "value";
    const bool reverse = BoolArg(args, 2, "reverse", false);
    const Value attribute(by_value ? "1" : "0");
    return Sorted(in, std::move(pairs), reverse, case_sensitive, &attribute);
  }
  if (n == "sort") {
    ASSIGN_OR_RETURN(List items, Items(v));
    return Sorted(in, std::move(items), BoolArg(args, 0, "reverse", false),
                  BoolArg(args, 1, "case_sensitive", false), args.Get(2, "attribute"));
  }
  if (n == "reverse") {
    if (v.is_string()) {
      std::vector<std::string> chars = CodePoints(v.as_string());
      std::reverse(chars.begin(), chars.end());
      return Value(absl::StrJoin(chars, ""));
    }
    ASSIGN_OR_RETURN(List items, Items(v));
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (n == "select" || n == "reject") return SelectReject(in, v, args, n == "select", false);
  if (n == "selectattr" || n == "rejectattr") {
    return SelectReject(in, v, args, n == "selectattr", true);
  }
  if (n == "map") {
    ASSIGN_OR_RETURN(List items, Items(v));
    List out;
    if (const Value* attribute = args.Get(99, "attribute")) {
      const Value* fallback = args.Get(99, "default");
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value x, Attribute(in, item, attribute->Str()));
        if (x.is_undefined() && fallback != nullptr) x = *fallback;
        out.push_back(std::move(x));
      }
      return Value::MakeList(std::move(out));
    }
    if (args.positional.empty()) return Error("map() needs a filter name or attribute=");
    const std::string filter = args.positional[0].Str();
    Args filter_args;
    filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
    filter_args.keyword = args.keyword;
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value x, in.ApplyFilter(filter, item, filter_args));
      out.push_back(std::move(x));
    }
    return Value::MakeList(std::move(out));
  }
  if (n == "unique") {
    ASSIGN_OR_RETURN(List items, Items(v));
    const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
    const Value* attribute = args.Get(1, "attribute");
    List out, seen;
    for (const Value& item : items) {
      Value key = item;
      if (attribute != nullptr) {
        ASSIGN_OR_RETURN(key, Attribute(in, item, attribute->Str()));
      }
      key = SortKey(key, case_sensitive);
      bool dup = false;
      for (const Value& s : seen) dup |= s.Equals(key);
      if (dup) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return Value::MakeList(std::move(out));
  }
  if (n == "indent") {
    const Value* width = args.Get(0, "width");
    std::string pad = "    ";
    if (width != nullptr)
      pad = width->is_string() ? width->as_string() : std::string(width->as_int(), ' ');
    return Value(
        Indent(v.Str(), pad, BoolArg(args, 1, "first", false), BoolArg(args, 2, "blank", false)));
  }
  if (n == "batch") {
    ASSIGN_OR_RETURN(List items, Items(v));
    const int64_t size = IntArg(args, 0, "linecount", 1);
    if (size <= 0) return Error("batch(): the size must be positive");
    const Value* fill = args.Get(1, "fill_with");
    List out, current;
    for (const Value& item : items) {
      current.push_back(item);
      if (static_cast<int64_t>(current.size()) == size) {
        out.push_back(Value::MakeList(std::move(current)));
        current.clear();
      }
    }
    if (!current.empty()) {
      while (fill != nullptr && static_cast<int64_t>(current.size()) < size)
        current.push_back(*fill);
      out.push_back(Value::MakeList(std::move(current)));
    }
    return Value::MakeList(std::move(out));
  }
  if (n == "sum") {
    ASSIGN_OR_RETURN(List items, Items(v));
    const Value* attribute = args.Get(0, "attribute");
    const Value* start = args.Get(1, "start");
    Value total = start != nullptr ? *start : Value(0);
    for (const Value& item : items) {
      Value x = item;
      if (attribute != nullptr) {
        ASSIGN_OR_RETURN(x, Attribute(in, item, attribute->Str()));
      }
      if (!x.is_number() || !total.is_number()) {
        return Error("sum(): unsupported operand types '" + total.TypeName() + "' and '" +
                     x.TypeName() + "'");
      }
      total = total.is_float() || x.is_float() ? Value(total.as_float() + x.as_float())
                                               : Value(total.as_int() + x.as_int());
    }
    return total;
  }
  if (n == "min" || n == "max") {
    ASSIGN_OR_RETURN(List items, Items(v));
    if (items.empty()) return Value::Undefined();
    const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
    const Value* attribute = args.Get(1, "attribute");
    ASSIGN_OR_RETURN(Value sorted, Sorted(in, items, false, case_sensitive, attribute));
    return n == "min" ? sorted.list().front() : sorted.list().back();
  }
  if (n == "wordcount") {
    ASSIGN_OR_RETURN(Value words, Split(v.Str(), nullptr, -1, false));
    return Value(static_cast<int64_t>(words.list().size()));
  }
  if (n == "attr") {
    const Value* attribute = args.Get(0, "name");
    if (attribute == nullptr) return Error("attr() needs a name");
    return in.GetAttr(v, attribute->Str());
  }
  if (n == "format") {
    // "%s and %s"|format(a, b): printf-style, as Python's % operator.
    ASSIGN_OR_RETURN(std::string out, PercentFormat(v.Str(), args.positional));
    return Value(std::move(out));
  }
  return Error("no filter named '" + name + "'");
}

absl::StatusOr<bool> Test(Interpreter& in, const std::string& name, const Value& v,
                          const Args& args) {
  const std::string_view n = name;  // compares lengths first
  (void)in;
  const Value* arg = args.Get(0, "value");
  auto need_arg = [&]() -> absl::Status {
    return arg == nullptr ? Error("test '" + name + "' needs an argument") : absl::OkStatus();
  };
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "string") return v.is_string();
  if (n == "number") return v.is_number();
  if (n == "integer") return v.is_int();
  if (n == "float") return v.is_float();
  if (n == "boolean") return v.is_bool();
  if (n == "true") return v.is_bool() && v.as_bool();
  if (n == "false") return v.is_bool() && !v.as_bool();
  if (n == "mapping") return v.is_dict();
  if (n == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (n == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (n == "callable") return v.is_callable();
  if (n == "escaped") return false;
  if (n == "lower") return v.is_string() && ToLower(v.as_string()) == v.as_string();
  if (n == "upper") return v.is_string() && ToUpper(v.as_string()) == v.as_string();
  if (n == "odd" || n == "even" || n == "divisibleby") {
    if (!v.is_number()) return Error("test '" + name + "' needs a number, got " + v.TypeName());
    if (n == "divisibleby") {
      RETURN_IF_ERROR(need_arg());
      if (arg->as_int() == 0) return Error("divisibleby 0");
      return v.as_int() % arg->as_int() == 0;
    }
    return (v.as_int() % 2 != 0) == (n == "odd");
  }
  if (n == "eq" || n == "equalto" || n == "==") {
    RETURN_IF_ERROR(need_arg());
    return v.Equals(*arg);
  }
  if (n == "ne" || n == "!=") {
    RETURN_IF_ERROR(need_arg());
    return !v.Equals(*arg);
  }
  if (n == "lt" || n == "lessthan" || n == "<") {
    RETURN_IF_ERROR(need_arg());
    return Less(v, *arg);
  }
  if (n == "gt" || n == "greaterthan" || n == ">") {
    RETURN_IF_ERROR(need_arg());
    return Less(*arg, v);
  }
  if (n == "le" || n == "<=") {
    RETURN_IF_ERROR(need_arg());
    ASSIGN_OR_RETURN(bool lt, Less(v, *arg));
    return lt || v.Equals(*arg);
  }
  if (n == "ge" || n == ">=") {
    RETURN_IF_ERROR(need_arg());
    ASSIGN_OR_RETURN(bool lt, Less(*arg, v));
    return lt || v.Equals(*arg);
  }
  if (n == "in") {
    RETURN_IF_ERROR(need_arg());
    if (arg->is_string())
      return v.is_string() && arg->as_string().find(v.as_string()) != std::string::npos;
    if (arg->is_list()) {
      for (const Value& x : arg->list()) {
        if (x.Equals(v)) return true;
      }
      return false;
    }
    if (arg->is_dict()) return arg->dict().Find(v) != nullptr;
    return Error("test 'in' needs a container");
  }
  if (n == "sameas") {
    RETURN_IF_ERROR(need_arg());
    if (v.kind() != arg->kind()) return false;
    if (v.is_list() || v.is_dict())
      return v.Equals(*arg) &&
             (v.is_list() ? &v.list() == &arg->list() : &v.dict() == &arg->dict());
    return v.Equals(*arg);
  }
  return Error("no test named '" + name + "'");
}

Value Method(const Value& obj, const std::string& name) {
  const std::string_view n = name;  // compares lengths first
  auto method = [&](std::function<absl::StatusOr<Value>(Interpreter&, const Args&)> fn) {
    return Value::MakeCallable(name, std::move(fn));
  };
  auto unsafe = [&]() {
    const std::string what =
        "access to attribute '" + name + "' of '" + obj.TypeName() + "' object is unsafe.";
    return method(
        [what](Interpreter&, const Args&) -> absl::StatusOr<Value> { return Error(what); });
  };
  if (obj.is_string()) {
    const std::string s = obj.as_string();
    if (n == "strip" || n == "lstrip" || n == "rstrip") {
      const bool left = n != "rstrip", right = n != "lstrip";
      return method([s, left, right](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        return Value(Strip(s, a.Get(0, "chars"), left, right));
      });
    }
    if (n == "split" || n == "rsplit") {
      const bool right = n == "rsplit";
      return method([s, right](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        return Split(s, a.Get(0, "sep"), IntArg(a, 1, "maxsplit", -1), right);
      });
    }
    if (n == "splitlines") {
      return method([s](Interpreter&, const Args&) -> absl::StatusOr<Value> {
        List lines;
        size_t at = 0;
        while (at < s.size()) {
          size_t nl = s.find_first_of("\r\n", at);
          if (nl == std::string::npos) {
            lines.emplace_back(s.substr(at));
            break;
          }
          lines.emplace_back(s.substr(at, nl - at));
          at = nl + (s.compare(nl, 2, "\r\n") == 0 ? 2 : 1);
        }
        return Value::MakeList(std::move(lines));
      });
    }
    if (n == "startswith" || n == "endswith") {
      const bool start = n == "startswith";
      return method([s, start](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        const Value* p = a.Get(0, "prefix");
        if (p == nullptr) return Error("startswith/endswith need an argument");
        List options = p->is_list() ? p->list() : List{*p};
        for (const Value& o : options) {
          if (!o.is_string()) return Error("startswith/endswith take str or a tuple of str");
          const std::string& x = o.as_string();
          if (x.size() <= s.size() && (start ? s.compare(0, x.size(), x) == 0
                                             : s.compare(s.size() - x.size(), x.size(), x) == 0)) {
            return Value(true);
          }
        }
        return Value(false);
      });
    }
    if (n == "upper" || n == "lower" || n == "title" || n == "capitalize") {
      const std::string n = name;
      return method([s, n](Interpreter&, const Args&) -> absl::StatusOr<Value> {
        if (n == "upper") return Value(ToUpper(s));
        if (n == "lower") return Value(ToLower(s));
        if (n == "title") return Value(Title(s));
        return Value(Capitalize(s));
      });
    }
    if (n == "replace") {
      return method([s](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        const Value* from = a.Get(0, "old");
        const Value* to = a.Get(1, "new");
        if (from == nullptr || to == nullptr) return Error("replace() needs two arguments");
        return Value(Replace(s, from->Str(), to->Str(), IntArg(a, 2, "count", -1)));
      });
    }
    if (n == "find" || n == "rfind" || n == "count" || n == "index") {
      const std::string n = name;
      return method([s, n](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        const Value* sub = a.Get(0, "sub");
        if (sub == nullptr || !sub->is_string()) return Error(n + "() needs a string");
        const std::string& x = sub->as_string();
        if (n == "count") {
          if (x.empty()) return Value(CodePointCount(s) + 1);
          int64_t c = 0;
          for (size_t at = s.find(x); at != std::string::npos; at = s.find(x, at + x.size())) ++c;
          return Value(c);
        }
        const size_t at = n == "rfind" ? s.rfind(x) : s.find(x);
        if (at == std::string::npos) {
          if (n == "index") return Error("substring not found");
          return Value(-1);
        }
        return Value(CodePointCount(s.substr(0, at)));
      });
    }
    if (n == "join") {
      return method([s](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        if (a.positional.empty()) return Error("join() needs an iterable");
        ASSIGN_OR_RETURN(List items, Items(a.positional[0]));
        std::string out;
        for (size_t i = 0; i < items.size(); ++i) {
          if (!items[i].is_string()) return Error("join(): sequence item is not a str");
          if (i) out += s;
          out += items[i].as_string();
        }
        return Value(std::move(out));
      });
    }
    if (n == "isdigit" || n == "isalpha" || n == "isalnum" || n == "isspace" || n == "islower" ||
        n == "isupper") {
      const std::string n = name;
      return method([s, n](Interpreter&, const Args&) -> absl::StatusOr<Value> {
        if (s.empty()) return Value(false);
        if (n == "islower") return Value(ToLower(s) == s && ToUpper(s) != s);
        if (n == "isupper") return Value(ToUpper(s) == s && ToLower(s) != s);
        for (const auto& c : unicode::Decode(s)) {
          if (c.cp == unicode::kInvalid) continue;
          const char32_t x = c.cp;
          const bool digit = x >= '0' && x <= '9';
          const bool alpha = unicode::IsLetter(x);
          const bool ok = n == "isdigit"   ? digit
                          : n == "isalpha" ? alpha
                          : n == "isalnum" ? digit || alpha
                                           : PySpace(x);
          if (!ok) return Value(false);
        }
        return Value(true);
      });
    }
    if (n == "format") {
      return method([s](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        // str.format with {}, {0} and {name} fields (no format specs).
        std::string out;
        size_t auto_index = 0;
        for (size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
            out += '{';
            ++i;
          } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
            out += '}';
            ++i;
          } else if (s[i] == '{') {
            const size_t end = s.find('}', i);
            if (end == std::string::npos) return Error("format(): a '{' is never closed");
            const std::string field = s.substr(i + 1, end - i - 1);
            const Value* v = nullptr;
            if (field.empty()) {
              v = auto_index < a.positional.size() ? &a.positional[auto_index++] : nullptr;
            } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
              const size_t k = std::stoul(field);
              v = k < a.positional.size() ? &a.positional[k] : nullptr;
            } else {
              v = a.Get(SIZE_MAX, field);
            }
            if (v == nullptr) return Error("format(): no value for {" + field + "}");
            out += v->Str();
            i = end;
          } else {
            out += s[i];
          }
        }
        return Value(std::move(out));
      });
    }
    return Value::Undefined(name);
  }
  if (obj.is_dict()) {
    const Value self = obj;
    if (n == "items" || n == "keys" || n == "values") {
      const std::string n = name;
      return method([self, n](Interpreter&, const Args&) -> absl::StatusOr<Value> {
        List out;
        for (const auto& [k, v] : self.dict().items) {
          out.push_back(n == "keys" ? k : n == "values" ? v : Value::MakeTuple({k, v}));
        }
        return Value::MakeList(std::move(out));
      });
    }
    if (n == "get") {
      return method([self](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        const Value* key = a.Get(0, "key");
        if (key == nullptr) return Error("get() needs a key");
        if (const Value* v = self.dict().Find(*key)) return *v;
        const Value* fallback = a.Get(1, "default");
        return fallback != nullptr ? *fallback : Value::None();
      });
    }
    if (n == "copy") {
      return method([self](Interpreter&, const Args&) -> absl::StatusOr<Value> {
        return Value::MakeDict(self.dict());
      });
    }
    static const std::set<std::string> kMutating = {"pop", "popitem", "update", "setdefault",
                                                    "clear"};
    if (kMutating.count(name)) return unsafe();
    return Value::Undefined(name);
  }
  if (obj.is_list()) {
    const Value self = obj;
    if (n == "index" || n == "count") {
      const bool index = n == "index";
      return method([self, index](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
        if (a.positional.empty()) return Error("index()/count() need a value");
        int64_t c = 0;
        for (size_t i = 0; i < self.list().size(); ++i) {
          if (!self.list()[i].Equals(a.positional[0])) continue;
          if (index) return Value(static_cast<int64_t>(i));
          ++c;
        }
        if (index) return Error(a.positional[0].Repr() + " is not in list");
        return Value(c);
      });
    }
    static const std::set<std::string> kMutating = {"append", "pop",  "extend",  "insert",
                                                    "remove", "sort", "reverse", "clear"};
    if (kMutating.count(name)) return unsafe();
    return Value::Undefined(name);
  }
  return Value::Undefined(name);
}

void AddGlobals(Dict* g) {
  g->Set("range",
         Value::MakeCallable("range", [](Interpreter& in, const Args& a) -> absl::StatusOr<Value> {
           int64_t start = 0, stop = 0, step = 1;
           for (const Value& v : a.positional) {
             if (!v.is_int() && !v.is_bool()) return Error("range() takes integers");
           }
           if (a.positional.size() == 1) {
             stop = a.positional[0].as_int();
           } else if (a.positional.size() >= 2) {
             start = a.positional[0].as_int();
             stop = a.positional[1].as_int();
             if (a.positional.size() >= 3) step = a.positional[2].as_int();
           } else {
             return Error("range() needs an argument");
           }
           if (step == 0) return Error("range() arg 3 must not be zero");
           List out;
           for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
             RETURN_IF_ERROR(in.Step());
             out.emplace_back(i);
           }
           return Value::MakeList(std::move(out));
         }));
  g->Set("namespace",
         Value::MakeCallable("namespace", [](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
           Dict attributes;
           for (const Value& p : a.positional) {
             if (!p.is_dict()) return Error("namespace() takes a dict or keyword arguments");
             for (const auto& [k, v] : p.dict().items) attributes.Set(k, v);
           }
           for (const auto& [k, v] : a.keyword) attributes.Set(Value(k), v);
           return Value::MakeNamespace(std::move(attributes));
         }));
  g->Set("dict",
         Value::MakeCallable("dict", [](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
           Dict d;
           for (const Value& p : a.positional) {
             if (!p.is_dict()) return Error("dict() takes a dict or keyword arguments");
             for (const auto& [k, v] : p.dict().items) d.Set(k, v);
           }
           for (const auto& [k, v] : a.keyword) d.Set(Value(k), v);
           return Value::MakeDict(std::move(d));
         }));
  g->Set("raise_exception",
         Value::MakeCallable(
             "raise_exception", [](Interpreter&, const Args& a) -> absl::StatusOr<Value> {
               return absl::FailedPreconditionError(a.positional.empty() ? "raise_exception()"
                                                                         : a.positional[0].Str());
             }));
  g->Set("strftime_now",
         Value::MakeCallable("strftime_now",
                             [](Interpreter& in, const Args& a) -> absl::StatusOr<Value> {
                               if (a.positional.empty() || !a.positional[0].is_string()) {
                                 return Error("strftime_now() needs a format string");
                               }
                               return Value(in.clock()(a.positional[0].as_string()));
                             }));
}

}  // namespace strata::jinja
