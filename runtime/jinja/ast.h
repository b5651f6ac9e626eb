// The parsed template: statements and expressions, as the parser builds
// them and the interpreter walks them. Each node remembers its line for
// error messages.
#ifndef STRATA_RUNTIME_JINJA_AST_H_
#define STRATA_RUNTIME_JINJA_AST_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/jinja/value.h"

namespace strata::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // items
    kTuple,    // items
    kDict,     // items as key, value pairs
    kAttr,     // a.name
    kItem,     // a[b]
    kSlice,    // a[b:c:d] (items: start, stop, step; each may be null)
    kCall,     // a(args)
    kFilter,   // a | name(args)
    kTest,     // a is [not] name(args)
    kUnary,    // op a ("-", "+", "not")
    kBinary,   // a op b
    kCond,     // b if a else c (items: then, condition, otherwise)
  };
  Kind kind;
  int line = 0;
  Value value;           // kLiteral
  std::string name;      // kName, kAttr, kFilter, kTest; the operator of kUnary and kBinary
  bool negated = false;  // kTest: `is not`
  ExprPtr a, b;
  std::vector<ExprPtr> items;
  CallArgs args;  // kCall, kFilter, kTest
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind {
    kText,       // text
    kOutput,     // {{ expr }}
    kIf,         // branches (condition, body), else body
    kFor,        // targets in expr [if condition]: body, else body
    kSet,        // targets = expr; or a block set: target, body, filters
    kMacro,      // name(params): body
    kCallBlock,  // {% call [(params)] expr %} body
    kFilterBlock,
    kBreak,
    kContinue,
    kScope,  // a body that renders as is ({% generation %})
  };
  Kind kind;
  int line = 0;
  std::string text;   // kText
  ExprPtr expr;       // kOutput, kFor (iterable), kSet (value), kCallBlock (call), kFilterBlock
  ExprPtr condition;  // kFor's filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  Body body, else_body;
  // kFor and kSet: the assigned names; `ns.attr` targets are "ns" with attribute "attr".
  std::vector<std::string> targets;
  std::string target_attribute;  // kSet: `set ns.attr = ...`
  std::string name;              // kMacro
  // kMacro and kCallBlock: parameters with their defaults (null: required).
  std::vector<std::pair<std::string, ExprPtr>> params;
  std::vector<ExprPtr>
      filters;  // kSet (block) and kFilterBlock: filters over the body (a Name operand)
};

struct Program {
  Body body;
};

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_AST_H_
