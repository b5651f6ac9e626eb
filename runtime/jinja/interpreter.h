// Renders a parsed template: Jinja2's semantics as transformers runs chat
// templates (an ImmutableSandboxedEnvironment with loop controls): scopes
// (a for loop's body has its own; `set` in it does not leak out, namespace()
// attributes do), `loop.*`, macros and call blocks, filters and tests, the
// Python methods of str/list/dict that templates call, and the sandbox's
// refusal of mutating ones (list.append, dict.update, ...).
//
// A hostile template cannot run away: steps (statements, loop iterations,
// calls), call depth and output size are bounded, and every error (an
// undefined attribute, a type error, raise_exception()) is a Status, never a
// crash. raise_exception() gives FAILED_PRECONDITION with the template's
// message; other errors INVALID_ARGUMENT "line N: ...".
#ifndef STRATA_RUNTIME_JINJA_INTERPRETER_H_
#define STRATA_RUNTIME_JINJA_INTERPRETER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/jinja/ast.h"
#include "runtime/jinja/value.h"

namespace strata::jinja {

struct RenderLimits {
  int64_t max_steps = 5'000'000;  // statements, loop iterations and calls
  int64_t max_output = 16 << 20;  // bytes
  int max_depth = 128;            // nested macro calls
};

class Interpreter {
 public:
  // `strftime` formats the current time for strftime_now(); tests fix it.
  using Clock = std::function<std::string(const std::string& format)>;

  Interpreter(RenderLimits limits, Clock clock);

  // Renders `program` with `variables` as the template's globals.
  absl::StatusOr<std::string> Render(const Program& program, const Dict& variables);

  // For the built-ins: calls a callable value; applies a filter or test by
  // name (map('upper'), select('odd'), ...).
  absl::StatusOr<Value> Call(const Value& callee, const Args& args);
  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& operand,
                                    const Args& args);
  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& operand, const Args& args);
  // obj.name as Jinja reads it: a method of str/list/dict first, then the item.
  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
  // obj[key] as Jinja reads it: the item first, then the attribute.
  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
  // Counts one step; an error once the template has run too long.
  absl::Status Step();
  const Clock& clock() const { return clock_; }

 private:
  struct Scope {
    std::map<std::string, Value> vars;
    Scope* parent = nullptr;
  };
  enum class Flow { kNormal, kBreak, kContinue };

  absl::StatusOr<Flow> Exec(const Body& body, Scope* scope, std::string* out);
  absl::StatusOr<Flow> ExecNode(const Node& node, Scope* scope, std::string* out);
  absl::StatusOr<Flow> ExecFor(const Node& node, Scope* scope, std::string* out);
  absl::Status ExecSet(const Node& node, Scope* scope, std::string* out);
  absl::StatusOr<Value> Eval(const Expr& e, Scope* scope);
  absl::StatusOr<Value> EvalBinary(const Expr& e, Scope* scope);
  absl::StatusOr<Args> EvalArgs(const CallArgs& args, Scope* scope);
  absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop,
                              const Value& step);
  Value MakeMacro(const Node& node, Scope* scope);
  absl::Status Append(std::string* out, const std::string& text);
  Value Lookup(Scope* scope, const std::string& name) const;
  // Adds "line N: " to errors that do not say where they are.
  absl::Status AtLine(absl::Status st, int line) const;

  RenderLimits limits_;
  Clock clock_;
  int64_t steps_ = 0;
  int depth_ = 0;
  std::vector<std::unique_ptr<Scope>> scopes_;  // every scope made, alive to the end
};

// The built-ins (builtins.cc).
absl::StatusOr<Value> Filter(Interpreter& in, const std::string& name, const Value& v,
                             const Args& args);
absl::StatusOr<bool> Test(Interpreter& in, const std::string& name, const Value& v,
                          const Args& args);
// A bound method of a str, list or dict value, or undefined when it has none.
Value Method(const Value& obj, const std::string& name);
// The globals every template sees: range, namespace, dict, raise_exception,
// strftime_now.
void AddGlobals(Dict* globals);
// Python's printf-style `format % values` (%s, %d, %i, %r, %%).
absl::StatusOr<std::string> PercentFormat(const std::string& format, const List& values);
// Python's <, for sort/min/max and comparisons; error when the types do not compare.
absl::StatusOr<bool> Less(const Value& a, const Value& b);

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_INTERPRETER_H_
