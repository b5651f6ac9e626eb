// The values a Jinja template computes with, with Python's and Jinja2's
// semantics where templates can tell: lists and dicts are shared by
// reference (as Python objects are), dicts keep insertion order, strings are
// UTF-8 and indexed by code point, `undefined` is Jinja's Undefined (empty
// when printed, false, iterable as nothing; an error when its attributes are
// read). Printing follows Python's str(); `Repr` is Python's repr().
#ifndef STRATA_RUNTIME_JINJA_VALUE_H_
#define STRATA_RUNTIME_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::jinja {

class Value;
class Interpreter;

using List = std::vector<Value>;

// An insertion-ordered dict (templates' dicts are small: a linear scan).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* Find(const Value& key) const;
  Value* Find(const Value& key);
  // A string key, without making a Value of it.
  const Value* Find(std::string_view key) const;
  void Set(const Value& key, Value value);
};

// Arguments of a call: positional, then keyword.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The named argument: keyword `name`, else positional `index`; nullptr if neither.
  const Value* Get(size_t index, const std::string& name) const;
};

// A built-in function, a bound method or a macro.
struct Callable {
  std::string name;
  std::function<absl::StatusOr<Value>(Interpreter&, const Args&)> call;
};

// namespace(): attributes that `set ns.x = ...` may change from any scope.
struct Namespace {
  Dict attributes;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kCallable,
    kNamespace
  };

  Value() = default;  // undefined
  static Value Undefined(std::string name = "") {
    Value v;
    v.string_ = std::move(name);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}                         // NOLINT
  Value(int v) : kind_(Kind::kInt), int_(v) {}                           // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}                       // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}                    // NOLINT
  Value(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), string_(s) {}             // NOLINT
  static Value MakeList(List items = {});
  // A tuple: a list that prints as Python's tuple ("(1, 2)", "('x',)").
  static Value MakeTuple(List items);
  static Value MakeDict(Dict dict = {});
  static Value MakeCallable(std::string name,
                            std::function<absl::StatusOr<Value>(Interpreter&, const Args&)> fn);
  static Value MakeNamespace(Dict attributes);
  // From JSON (objects keep their order; integers stay integers).
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return is_float() ? static_cast<int64_t>(float_) : int_; }
  double as_float() const { return is_float() ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return string_; }
  // The undefined value's name (for error messages).
  const std::string& undefined_name() const { return string_; }
  List& list() const { return *static_cast<List*>(object_.get()); }
  Dict& dict() const { return *static_cast<Dict*>(object_.get()); }
  const Callable& callable() const { return *static_cast<Callable*>(object_.get()); }
  Namespace& ns() const { return *static_cast<Namespace*>(object_.get()); }
  // Whether two values are the same list, dict, callable or namespace object.
  bool SameObject(const Value& other) const { return object_ && object_ == other.object_; }

  // Python truthiness (undefined: false).
  bool Truthy() const;
  // Python's ==, with 1 == 1.0 == True.
  bool Equals(const Value& other) const;
  // Python's str() as Jinja prints it.
  std::string Str() const;
  // Python's repr().
  std::string Repr() const;
  // The type's name as Python says it ("str", "dict", "NoneType", ...).
  std::string TypeName() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}

  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<void> object_;  // the List, Dict, Callable or Namespace
};

// Python's repr() of a float ("1.0", "0.1", "1e-05", "inf").
std::string PythonFloat(double v);
// Python's repr() of a str: single quotes unless it holds one and no double.
std::string PythonRepr(const std::string& s);

// UTF-8 helpers: strings are indexed by code point, as Python's str is.
std::vector<std::string> CodePoints(const std::string& s);
int64_t CodePointCount(const std::string& s);

// json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=...) as
// transformers' tojson filter calls it; error for values JSON cannot hold.
absl::StatusOr<std::string> ToJson(const Value& value, int indent, bool sort_keys);

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_VALUE_H_
