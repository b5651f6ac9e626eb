#include "runtime/jinja/interpreter.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"

namespace strata::jinja {
namespace {

absl::Status TypeError(const std::string& message) { return absl::InvalidArgumentError(message); }

// Python's floor division and modulo on integers.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorMod(int64_t a, int64_t b) {
  int64_t m = a % b;
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

bool Contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    return item.is_string() && container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const Value& v : container.list()) {
      if (v.Equals(item)) return true;
    }
    return false;
  }
  if (container.is_dict()) return container.dict().Find(item) != nullptr;
  if (container.is_namespace()) return container.ns().attributes.Find(item) != nullptr;
  return false;
}

}  // namespace

Interpreter::Interpreter(RenderLimits limits, Clock clock)
    : limits_(limits), clock_(std::move(clock)) {}

absl::Status Interpreter::Step() {
  if (++steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the template ran more than ", limits_.max_steps, " steps"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Append(std::string* out, const std::string& text) {
  if (static_cast<int64_t>(out->size() + text.size()) > limits_.max_output) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the template's output grew past ", limits_.max_output, " bytes"));
  }
  *out += text;
  return absl::OkStatus();
}

absl::Status Interpreter::AtLine(absl::Status st, int line) const {
  if (st.ok() || absl::IsFailedPrecondition(st) || absl::IsResourceExhausted(st) ||
      absl::StartsWith(st.message(), "line ")) {
    return st;
  }
  return absl::Status(st.code(), absl::StrCat("line ", line, ": ", st.message()));
}

absl::StatusOr<std::string> Interpreter::Render(const Program& program, const Dict& variables) {
  steps_ = 0;
  depth_ = 0;
  scopes_.clear();
  scopes_.push_back(std::make_unique<Scope>());
  Scope* root = scopes_.back().get();
  Dict globals;
  AddGlobals(&globals);
  for (const auto& [k, v] : globals.items) root->vars[k.as_string()] = v;
  for (const auto& [k, v] : variables.items) root->vars[k.Str()] = v;
  std::string out;
  ASSIGN_OR_RETURN(Flow flow, Exec(program.body, root, &out));
  (void)flow;
  scopes_.clear();
  return out;
}

Value Interpreter::Lookup(Scope* scope, const std::string& name) const {
  for (Scope* s = scope; s != nullptr; s = s->parent) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  return Value::Undefined(name);
}

absl::StatusOr<Interpreter::Flow> Interpreter::Exec(const Body& body, Scope* scope,
                                                    std::string* out) {
  for (const auto& node : body) {
    RETURN_IF_ERROR(Step());
    absl::StatusOr<Flow> flow = ExecNode(*node, scope, out);
    if (!flow.ok()) return AtLine(flow.status(), node->line);
    if (*flow != Flow::kNormal) return *flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecNode(const Node& n, Scope* scope,
                                                        std::string* out) {
  switch (n.kind) {
    case Node::Kind::kText:
      RETURN_IF_ERROR(Append(out, n.text));
      return Flow::kNormal;
    case Node::Kind::kOutput: {
      ASSIGN_OR_RETURN(Value v, Eval(*n.expr, scope));
      RETURN_IF_ERROR(Append(out, v.Str()));
      return Flow::kNormal;
    }
    case Node::Kind::kIf:
      for (const auto& [condition, body] : n.branches) {
        ASSIGN_OR_RETURN(Value c, Eval(*condition, scope));
        if (c.Truthy()) return Exec(body, scope, out);
      }
      return Exec(n.else_body, scope, out);
    case Node::Kind::kFor:
      return ExecFor(n, scope, out);
    case Node::Kind::kSet:
      RETURN_IF_ERROR(ExecSet(n, scope, out));
      return Flow::kNormal;
    case Node::Kind::kMacro:
      scope->vars[n.name] = MakeMacro(n, scope);
      return Flow::kNormal;
    case Node::Kind::kCallBlock: {
      // caller() renders the body in this scope, with the block's parameters.
      const Node* block = &n;
      Value caller = Value::MakeCallable(
          "caller", [this, block, scope](Interpreter&, const Args& args) -> absl::StatusOr<Value> {
            scopes_.push_back(std::make_unique<Scope>());
            Scope* local = scopes_.back().get();
            local->parent = scope;
            for (size_t i = 0; i < block->params.size(); ++i) {
              const Value* v = args.Get(i, block->params[i].first);
              if (v != nullptr) {
                local->vars[block->params[i].first] = *v;
              } else if (block->params[i].second != nullptr) {
                ASSIGN_OR_RETURN(local->vars[block->params[i].first],
                                 Eval(*block->params[i].second, scope));
              }
            }
            std::string text;
            ASSIGN_OR_RETURN(Flow f, Exec(block->body, local, &text));
            (void)f;
            return Value(std::move(text));
          });
      scopes_.push_back(std::make_unique<Scope>());
      Scope* with_caller = scopes_.back().get();
      with_caller->parent = scope;
      with_caller->vars["caller"] = caller;
      const Expr& call = *n.expr;
      ASSIGN_OR_RETURN(Value callee, Eval(*call.a, scope));
      ASSIGN_OR_RETURN(Args args, EvalArgs(call.args, scope));
      args.keyword.emplace_back("caller", caller);
      ASSIGN_OR_RETURN(Value result, Call(callee, args));
      RETURN_IF_ERROR(Append(out, result.Str()));
      return Flow::kNormal;
    }
    case Node::Kind::kFilterBlock: {
      std::string text;
      ASSIGN_OR_RETURN(Flow f, Exec(n.body, scope, &text));
      (void)f;
      Value v(std::move(text));
      for (const auto& filter : n.filters) {
        ASSIGN_OR_RETURN(Args args, EvalArgs(filter->args, scope));
        ASSIGN_OR_RETURN(v, ApplyFilter(filter->name, v, args));
      }
      RETURN_IF_ERROR(Append(out, v.Str()));
      return Flow::kNormal;
    }
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
    case Node::Kind::kScope:
      return Exec(n.body, scope, out);
  }
  return Flow::kNormal;
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecFor(const Node& n, Scope* scope,
                                                       std::string* out) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*n.expr, scope));
  List items;
  if (iterable.is_list()) {
    items = iterable.list();  // a copy: the body may not change what it walks
  } else if (iterable.is_dict()) {
    for (const auto& [k, v] : iterable.dict().items) items.push_back(k);
  } else if (iterable.is_string()) {
    for (std::string& c : CodePoints(iterable.as_string())) items.emplace_back(std::move(c));
  } else if (!iterable.is_undefined()) {
    return TypeError(absl::StrCat("\'", iterable.TypeName(), "' object is not iterable"));
  }
  scopes_.push_back(std::make_unique<Scope>());
  Scope* local = scopes_.back().get();
  local->parent = scope;
  auto bind = [&](const Value& item) -> absl::Status {
    if (n.targets.size() == 1) {
      local->vars[n.targets[0]] = item;
      return absl::OkStatus();
    }
    if (!item.is_list() || item.list().size() != n.targets.size()) {
      return TypeError(
          absl::StrCat("cannot unpack ", item.Repr(), " into ", n.targets.size(), " names"));
    }
    for (size_t i = 0; i < n.targets.size(); ++i) local->vars[n.targets[i]] = item.list()[i];
    return absl::OkStatus();
  };
  // The loop's filter runs before `loop` counts (Jinja filters first).
  if (n.condition != nullptr) {
    List kept;
    for (const Value& item : items) {
      RETURN_IF_ERROR(Step());
      RETURN_IF_ERROR(bind(item));
      ASSIGN_OR_RETURN(Value keep, Eval(*n.condition, local));
      if (keep.Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) return Exec(n.else_body, scope, out);
  const int64_t length = static_cast<int64_t>(items.size());
  // One `loop` object, updated in place each iteration.
  auto position = std::make_shared<int64_t>(0);
  Dict loop;
  loop.items.reserve(12);
  for (const char* key : {"index", "index0", "revindex", "revindex0", "first", "last", "length",
                          "depth", "depth0", "previtem", "nextitem"}) {
    loop.items.emplace_back(Value(key), Value());
  }
  loop.Set("cycle",
           Value::MakeCallable("cycle",
                               [position](Interpreter&, const Args& args) -> absl::StatusOr<Value> {
                                 if (args.positional.empty()) {
                                   return TypeError("loop.cycle() needs at least one value");
                                 }
                                 return args.positional[*position % args.positional.size()];
                               }));
  const Value loop_value = Value::MakeDict(std::move(loop));
  local->vars["loop"] = loop_value;
  auto& fields = loop_value.dict().items;
  for (int64_t i = 0; i < length; ++i) {
    RETURN_IF_ERROR(Step());
    RETURN_IF_ERROR(bind(items[i]));
    *position = i;
    fields[0].second = Value(i + 1);
    fields[1].second = Value(i);
    fields[2].second = Value(length - i);
    fields[3].second = Value(length - i - 1);
    fields[4].second = Value(i == 0);
    fields[5].second = Value(i == length - 1);
    fields[6].second = Value(length);
    fields[7].second = Value(1);
    fields[8].second = Value(0);
    fields[9].second = i > 0 ? items[i - 1] : Value::Undefined("previtem");
    fields[10].second = i + 1 < length ? items[i + 1] : Value::Undefined("nextitem");
    ASSIGN_OR_RETURN(Flow flow, Exec(n.body, local, out));
    if (flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

absl::Status Interpreter::ExecSet(const Node& n, Scope* scope, std::string* out) {
  (void)out;
  Value value;
  if (n.expr != nullptr) {
    ASSIGN_OR_RETURN(value, Eval(*n.expr, scope));
  } else {
    std::string text;
    ASSIGN_OR_RETURN(Flow f, Exec(n.body, scope, &text));
    (void)f;
    value = Value(std::move(text));
    for (const auto& filter : n.filters) {
      ASSIGN_OR_RETURN(Args args, EvalArgs(filter->args, scope));
      ASSIGN_OR_RETURN(value, ApplyFilter(filter->name, value, args));
    }
  }
  if (!n.target_attribute.empty()) {
    const Value target = Lookup(scope, n.targets[0]);
    if (!target.is_namespace()) {
      return TypeError("cannot assign attribute on non-namespace object '" + n.targets[0] + "'");
    }
    target.ns().attributes.Set(Value(n.target_attribute), std::move(value));
    return absl::OkStatus();
  }
  if (n.targets.size() == 1) {
    scope->vars[n.targets[0]] = std::move(value);
    return absl::OkStatus();
  }
  if (!value.is_list() || value.list().size() != n.targets.size()) {
    return TypeError(
        absl::StrCat("cannot unpack ", value.Repr(), " into ", n.targets.size(), " names"));
  }
  for (size_t i = 0; i < n.targets.size(); ++i) scope->vars[n.targets[i]] = value.list()[i];
  return absl::OkStatus();
}

Value Interpreter::MakeMacro(const Node& node, Scope* scope) {
  const Node* macro = &node;
  return Value::MakeCallable(
      node.name, [this, macro, scope](Interpreter&, const Args& args) -> absl::StatusOr<Value> {
        if (++depth_ > limits_.max_depth) {
          --depth_;
          return absl::ResourceExhaustedError(
              absl::StrCat("macro calls nested deeper than ", limits_.max_depth));
        }
        scopes_.push_back(std::make_unique<Scope>());
        Scope* local = scopes_.back().get();
        local->parent = scope;
        List varargs;
        for (size_t i = macro->params.size(); i < args.positional.size(); ++i) {
          varargs.push_back(args.positional[i]);
        }
        Dict kwargs;
        for (size_t i = 0; i < macro->params.size(); ++i) {
          const auto& [name, def] = macro->params[i];
          if (const Value* v = args.Get(i, name)) {
            local->vars[name] = *v;
          } else if (def != nullptr) {
            absl::StatusOr<Value> d = Eval(*def, local);
            if (!d.ok()) {
              --depth_;
              return d.status();
            }
            local->vars[name] = *d;
          } else {
            local->vars[name] = Value::Undefined(name);
          }
        }
        for (const auto& [k, v] : args.keyword) {
          bool known = k == "caller";
          for (const auto& p : macro->params) known |= p.first == k;
          if (!known) kwargs.Set(Value(k), v);
          if (k == "caller") local->vars["caller"] = v;
        }
        local->vars["varargs"] = Value::MakeList(std::move(varargs));
        local->vars["kwargs"] = Value::MakeDict(std::move(kwargs));
        std::string text;
        absl::StatusOr<Flow> f = Exec(macro->body, local, &text);
        --depth_;
        if (!f.ok()) return f.status();
        return Value(std::move(text));
      });
}

absl::StatusOr<Args> Interpreter::EvalArgs(const CallArgs& call, Scope* scope) {
  Args args;
  for (const auto& p : call.positional) {
    ASSIGN_OR_RETURN(Value v, Eval(*p, scope));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [k, e] : call.keyword) {
    ASSIGN_OR_RETURN(Value v, Eval(*e, scope));
    args.keyword.emplace_back(k, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Interpreter::Call(const Value& callee, const Args& args) {
  RETURN_IF_ERROR(Step());
  if (callee.is_undefined()) {
    return TypeError(absl::StrCat("\'", callee.undefined_name(), "' is undefined"));
  }
  if (!callee.is_callable()) return TypeError(absl::StrCat("\'", callee.TypeName(), "' object is not callable"));
  return callee.callable().call(*this, args);
}

absl::StatusOr<Value> Interpreter::ApplyFilter(const std::string& name, const Value& operand,
                                               const Args& args) {
  RETURN_IF_ERROR(Step());
  return Filter(*this, name, operand, args);
}

absl::StatusOr<bool> Interpreter::ApplyTest(const std::string& name, const Value& operand,
                                            const Args& args) {
  RETURN_IF_ERROR(Step());
  return Test(*this, name, operand, args);
}

absl::StatusOr<Value> Interpreter::GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) {
    return TypeError(obj.undefined_name().empty()
                         ? "an undefined value has no attribute '" + name + "'"
                         : absl::StrCat("\'", obj.undefined_name(), "' is undefined"));
  }
  if (obj.is_namespace()) {
    const Value* v = obj.ns().attributes.Find(std::string_view(name));
    return v != nullptr ? *v : Value::Undefined(name);
  }
  Value method = Method(obj, name);
  if (!method.is_undefined()) return method;
  if (obj.is_dict()) {
    const Value* v = obj.dict().Find(std::string_view(name));
    return v != nullptr ? *v : Value::Undefined(name);
  }
  return Value::Undefined(name);
}

absl::StatusOr<Value> Interpreter::GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) {
    return TypeError(obj.undefined_name().empty() ? "an undefined value has no item " + key.Repr()
                                                  : absl::StrCat("\'", obj.undefined_name(), "' is undefined"));
  }
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().Find(key)) return *v;
  } else if (obj.is_list() || obj.is_string()) {
    if (key.is_int() || key.is_bool()) {
      int64_t i = key.as_int();
      if (obj.is_list()) {
        const int64_t n = static_cast<int64_t>(obj.list().size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return obj.list()[i];
      } else {
        std::vector<std::string> chars = CodePoints(obj.as_string());
        const int64_t n = static_cast<int64_t>(chars.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return Value(chars[i]);
      }
      return Value::Undefined();
    }
  } else if (obj.is_namespace()) {
    if (const Value* v = obj.ns().attributes.Find(key)) return *v;
  }
  if (key.is_string()) return GetAttr(obj, key.as_string());
  return Value::Undefined();
}

absl::StatusOr<Value> Interpreter::Slice(const Value& obj, const Value& start_v,
                                         const Value& stop_v, const Value& step_v) {
  auto get = [](const Value& v, int64_t fallback) -> absl::StatusOr<int64_t> {
    if (v.is_undefined() || v.is_none()) return fallback;
    if (!v.is_int() && !v.is_bool()) return TypeError("slice indices must be integers or None");
    return v.as_int();
  };
  std::vector<Value> seq;
  std::vector<std::string> chars;
  int64_t n = 0;
  if (obj.is_list()) {
    n = static_cast<int64_t>(obj.list().size());
  } else if (obj.is_string()) {
    chars = CodePoints(obj.as_string());
    n = static_cast<int64_t>(chars.size());
  } else if (obj.is_undefined()) {
    return TypeError(absl::StrCat("\'", obj.undefined_name(), "' is undefined"));
  } else {
    return TypeError(absl::StrCat("\'", obj.TypeName(), "' object is not subscriptable"));
  }
  ASSIGN_OR_RETURN(int64_t step, get(step_v, 1));
  if (step == 0) return TypeError("slice step cannot be zero");
  const int64_t lo_default = step > 0 ? 0 : n - 1;
  const int64_t hi_default = step > 0 ? n : -n - 1;
  ASSIGN_OR_RETURN(int64_t start, get(start_v, lo_default));
  ASSIGN_OR_RETURN(int64_t stop, get(stop_v, hi_default));
  // Python's clamping of a given index: into [0, n] going up, [-1, n-1] down.
  auto clamp = [&](int64_t i) {
    if (i < 0) i += n;
    return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
  };
  if (!(start_v.is_undefined() || start_v.is_none())) start = clamp(start);
  if (!(stop_v.is_undefined() || stop_v.is_none())) {
    stop = clamp(stop);
  } else if (step < 0) {
    stop = -1;
  }
  List out_list;
  std::string out_str;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (obj.is_list()) {
      out_list.push_back(obj.list()[i]);
    } else {
      out_str += chars[i];
    }
  }
  if (obj.is_list()) return Value::MakeList(std::move(out_list));
  return Value(std::move(out_str));
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& e, Scope* scope) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return Lookup(scope, e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      List items;
      for (const auto& item : e.items) {
        ASSIGN_OR_RETURN(Value v, Eval(*item, scope));
        items.push_back(std::move(v));
      }
      return e.kind == Expr::Kind::kTuple ? Value::MakeTuple(std::move(items))
                                          : Value::MakeList(std::move(items));
    }
    case Expr::Kind::kDict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        ASSIGN_OR_RETURN(Value k, Eval(*e.items[i], scope));
        ASSIGN_OR_RETURN(Value v, Eval(*e.items[i + 1], scope));
        d.Set(k, std::move(v));
      }
      return Value::MakeDict(std::move(d));
    }
    case Expr::Kind::kAttr: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, scope));
      return GetAttr(obj, e.name);
    }
    case Expr::Kind::kItem: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, scope));
      ASSIGN_OR_RETURN(Value key, Eval(*e.b, scope));
      return GetItem(obj, key);
    }
    case Expr::Kind::kSlice: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, scope));
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (e.items[i] != nullptr) {
          ASSIGN_OR_RETURN(parts[i], Eval(*e.items[i], scope));
        }
      }
      return Slice(obj, parts[0], parts[1], parts[2]);
    }
    case Expr::Kind::kCall: {
      ASSIGN_OR_RETURN(Value callee, Eval(*e.a, scope));
      ASSIGN_OR_RETURN(Args args, EvalArgs(e.args, scope));
      return Call(callee, args);
    }
    case Expr::Kind::kFilter: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.a, scope));
      ASSIGN_OR_RETURN(Args args, EvalArgs(e.args, scope));
      return ApplyFilter(e.name, v, args);
    }
    case Expr::Kind::kTest: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.a, scope));
      ASSIGN_OR_RETURN(Args args, EvalArgs(e.args, scope));
      ASSIGN_OR_RETURN(bool r, ApplyTest(e.name, v, args));
      return Value(r != e.negated);
    }
    case Expr::Kind::kUnary: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.a, scope));
      if (e.name == "not") return Value(!v.Truthy());
      if (!v.is_number()) {
        return TypeError("bad operand type for unary " + e.name + ": '" + v.TypeName() + "'");
      }
      if (e.name == "+") return v.is_float() ? v : Value(v.as_int());
      return v.is_float() ? Value(-v.as_float()) : Value(-v.as_int());
    }
    case Expr::Kind::kBinary:
      return EvalBinary(e, scope);
    case Expr::Kind::kCond: {
      ASSIGN_OR_RETURN(Value c, Eval(*e.items[1], scope));
      if (c.Truthy()) return Eval(*e.items[0], scope);
      if (e.items[2] == nullptr) return Value::Undefined();
      return Eval(*e.items[2], scope);
    }
  }
  return Value::Undefined();
}

absl::StatusOr<Value> Interpreter::EvalBinary(const Expr& e, Scope* scope) {
  const std::string& op = e.name;
  ASSIGN_OR_RETURN(Value a, Eval(*e.a, scope));
  if (op == "and") return a.Truthy() ? Eval(*e.b, scope) : a;
  if (op == "or") return a.Truthy() ? a : Eval(*e.b, scope);
  ASSIGN_OR_RETURN(Value b, Eval(*e.b, scope));
  if (op == "~") {
    const std::string s = a.Str() + b.Str();
    if (static_cast<int64_t>(s.size()) > limits_.max_output) {
      return absl::ResourceExhaustedError("a string grew past the output limit");
    }
    return Value(s);
  }
  if (op == "==") return Value(a.Equals(b));
  if (op == "!=") return Value(!a.Equals(b));
  if (op == "in" || op == "not in") {
    if (!b.is_list() && !b.is_dict() && !b.is_string() && !b.is_undefined() && !b.is_namespace()) {
      return TypeError("argument of type '" + b.TypeName() + "' is not iterable");
    }
    if (b.is_string() && !a.is_string()) {
      return TypeError("'in <string>' requires string as left operand, not " + a.TypeName());
    }
    return Value(Contains(b, a) == (op == "in"));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    ASSIGN_OR_RETURN(bool lt, Less(op[0] == '<' ? a : b, op[0] == '<' ? b : a));
    if (op.size() == 1) return Value(lt);
    return Value(lt || a.Equals(b));
  }
  auto undefined_error = [&](const Value& v) {
    return TypeError(absl::StrCat("\'", v.undefined_name(), "' is undefined"));
  };
  if (a.is_undefined()) return undefined_error(a);
  if (b.is_undefined()) return undefined_error(b);
  auto type_error = [&] {
    return TypeError("unsupported operand type(s) for " + op + ": '" + a.TypeName() + "' and '" +
                     b.TypeName() + "'");
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list()) {
      List items = a.list();
      items.insert(items.end(), b.list().begin(), b.list().end());
      return Value::MakeList(std::move(items));
    }
    if (a.is_string() || b.is_string()) {
      return TypeError(a.is_string()
                           ? "can only concatenate str (not \"" + b.TypeName() + "\") to str"
                           : std::string(type_error().message()));
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list()   ? &a
                       : b.is_string() || b.is_list() ? &b
                                                      : nullptr;
    const Value* count = seq == &a ? &b : &a;
    if (seq != nullptr) {
      if (!count->is_int() && !count->is_bool()) return type_error();
      const int64_t n = std::max<int64_t>(0, count->as_int());
      const int64_t size = seq->is_string() ? static_cast<int64_t>(seq->as_string().size())
                                            : static_cast<int64_t>(seq->list().size());
      if (n * std::max<int64_t>(size, 1) > limits_.max_output) {
        return absl::ResourceExhaustedError("a repetition grew past the output limit");
      }
      if (seq->is_string()) {
        std::string s;
        for (int64_t i = 0; i < n; ++i) s += seq->as_string();
        return Value(std::move(s));
      }
      List items;
      for (int64_t i = 0; i < n; ++i) {
        items.insert(items.end(), seq->list().begin(), seq->list().end());
      }
      return Value::MakeList(std::move(items));
    }
  }
  if (op == "%" && a.is_string()) {
    // printf-style formatting: %s and %d with one value or a tuple.
    ASSIGN_OR_RETURN(std::string out,
                     PercentFormat(a.as_string(), b.is_list() ? b.list() : List{b}));
    return Value(std::move(out));
  }
  if (!a.is_number() || !b.is_number()) return type_error();
  const bool floats = a.is_float() || b.is_float();
  if (op == "+")
    return floats ? Value(a.as_float() + b.as_float()) : Value(a.as_int() + b.as_int());
  if (op == "-")
    return floats ? Value(a.as_float() - b.as_float()) : Value(a.as_int() - b.as_int());
  if (op == "*")
    return floats ? Value(a.as_float() * b.as_float()) : Value(a.as_int() * b.as_int());
  if (op == "/") {
    if (b.as_float() == 0) return TypeError("division by zero");
    return Value(a.as_float() / b.as_float());
  }
  if (op == "//" || op == "%") {
    if (b.as_float() == 0)
      return TypeError(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
    if (!floats) {
      return Value(op == "//" ? FloorDiv(a.as_int(), b.as_int())
                              : FloorMod(a.as_int(), b.as_int()));
    }
    const double q = std::floor(a.as_float() / b.as_float());
    if (op == "//") return Value(q);
    double m = std::fmod(a.as_float(), b.as_float());
    if (m != 0 && ((m < 0) != (b.as_float() < 0))) m += b.as_float();
    return Value(m);
  }
  if (op == "**") {
    if (!floats && b.as_int() >= 0) {
      int64_t r = 1;
      for (int64_t i = 0; i < b.as_int() && i < 64; ++i) r *= a.as_int();
      return Value(r);
    }
    return Value(std::pow(a.as_float(), b.as_float()));
  }
  return type_error();
}

}  // namespace strata::jinja
