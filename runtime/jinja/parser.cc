#include "runtime/jinja/parser.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/jinja/lexer.h"
#include "runtime/status_macros.h"

namespace strata::jinja {
namespace {

using T = Token::Type;

// The deepest nesting of expressions and blocks a template may have.
constexpr int kMaxDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Program>> Run() {
    auto program = std::make_unique<Program>();
    std::string end;
    RETURN_IF_ERROR(ParseBody(&program->body, {}, &end));
    return program;
  }

 private:
  const Token& Peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& Take() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == T::kOp && Peek(ahead).value == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == T::kName && Peek(ahead).value == name;
  }
  absl::Status Error(const Token& at, const std::string& message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", at.line, ", column ", at.column, ": ", message));
  }
  std::string Describe(const Token& t) const {
    switch (t.type) {
      case T::kEof:
        return "the end of the template";
      case T::kBlockEnd:
        return "'%}'";
      case T::kVarEnd:
        return "'}}'";
      case T::kText:
        return "text";
      default:
        return absl::StrCat("'", t.value, "'");
    }
  }
  absl::Status Expect(const char* op) {
    if (!IsOp(op))
      return Error(Peek(), absl::StrCat("expected '", op, "', got ", Describe(Peek())));
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectName(const char* name) {
    if (!IsName(name)) {
      return Error(Peek(), absl::StrCat("expected '", name, "', got ", Describe(Peek())));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != T::kBlockEnd) {
      return Error(Peek(), "expected '%}', got " + Describe(Peek()));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> TakeName() {
    if (Peek().type != T::kName) return Error(Peek(), "expected a name, got " + Describe(Peek()));
    return Take().value;
  }

  // Statements until one of `ends` (the block's name, consumed with its
  // tag's name left in *end) or the end of the template (only at top level).
  absl::Status ParseBody(Body* body, const std::set<std::string>& ends, std::string* end) {
    if (++depth_ > kMaxDepth) return Error(Peek(), "blocks nested too deeply");
    while (true) {
      const Token& t = Peek();
      if (t.type == T::kEof) {
        if (!ends.empty()) {
          std::string tags;
          for (const std::string& e : ends)
            absl::StrAppend(&tags, tags.empty() ? "" : " or ", "'", e, "'");
          return Error(t, "unexpected end of template: expected " + tags);
        }
        break;
      }
      if (t.type == T::kText) {
        auto n = NewNode(Node::Kind::kText, t);
        n->text = Take().value;
        body->push_back(std::move(n));
        continue;
      }
      if (t.type == T::kVarBegin) {
        ++i_;
        auto n = NewNode(Node::Kind::kOutput, t);
        ASSIGN_OR_RETURN(n->expr, ParseExpression());
        if (Peek().type != T::kVarEnd) {
          return Error(Peek(), "expected '}}', got " + Describe(Peek()));
        }
        ++i_;
        body->push_back(std::move(n));
        continue;
      }
      if (t.type != T::kBlockBegin) return Error(t, "unexpected " + Describe(t));
      const Token& keyword = Peek(1);
      if (keyword.type == T::kName && ends.count(keyword.value)) {
        i_ += 2;
        *end = keyword.value;
        break;
      }
      ++i_;
      std::unique_ptr<Node> n;
      ASSIGN_OR_RETURN(n, ParseStatement());
      body->push_back(std::move(n));
    }
    --depth_;
    return absl::OkStatus();
  }

  std::unique_ptr<Node> NewNode(Node::Kind kind, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = at.line;
    return n;
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseStatement() {
    const Token& at = Peek();
    ASSIGN_OR_RETURN(std::string keyword, TakeName());
    if (keyword == "if") return ParseIf(at);
    if (keyword == "for") return ParseFor(at);
    if (keyword == "set") return ParseSet(at);
    if (keyword == "macro") return ParseMacro(at);
    if (keyword == "call") return ParseCallBlock(at);
    if (keyword == "filter") return ParseFilterBlock(at);
    if (keyword == "break" || keyword == "continue") {
      if (loops_ == 0) return Error(at, absl::StrCat("'", keyword, "' outside of a loop"));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NewNode(keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, at);
    }
    if (keyword == "generation") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      auto n = NewNode(Node::Kind::kScope, at);
      std::string end;
      RETURN_IF_ERROR(ParseBody(&n->body, {"endgeneration"}, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return n;
    }
    return Error(at, "unknown tag '" + keyword + "'");
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseIf(const Token& at) {
    auto n = NewNode(Node::Kind::kIf, at);
    while (true) {
      ExprPtr condition;
      ASSIGN_OR_RETURN(condition, ParseExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
      Body body;
      std::string end;
      RETURN_IF_ERROR(ParseBody(&body, {"elif", "else", "endif"}, &end));
      n->branches.emplace_back(std::move(condition), std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody(&n->else_body, {"endif"}, &end));
      }
      break;
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseFor(const Token& at) {
    auto n = NewNode(Node::Kind::kFor, at);
    RETURN_IF_ERROR(ParseTargets(&n->targets));
    RETURN_IF_ERROR(ExpectName("in"));
    // The iterable: no inline `if` (that starts the loop's filter).
    ASSIGN_OR_RETURN(n->expr, ParseOr());
    if (IsName("if")) {
      ++i_;
      ASSIGN_OR_RETURN(n->condition, ParseOr());
    }
    if (IsName("recursive")) return Error(Peek(), "recursive loops are not supported");
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loops_;
    std::string end;
    RETURN_IF_ERROR(ParseBody(&n->body, {"else", "endfor"}, &end));
    --loops_;
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      RETURN_IF_ERROR(ParseBody(&n->else_body, {"endfor"}, &end));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  // name or name, name, ... (optionally in parentheses).
  absl::Status ParseTargets(std::vector<std::string>* targets) {
    const bool paren = IsOp("(");
    if (paren) ++i_;
    while (true) {
      ASSIGN_OR_RETURN(std::string name, TakeName());
      targets->push_back(std::move(name));
      if (!IsOp(",")) break;
      ++i_;
      if (paren && IsOp(")")) break;
    }
    if (paren) RETURN_IF_ERROR(Expect(")"));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseSet(const Token& at) {
    auto n = NewNode(Node::Kind::kSet, at);
    if (Peek().type == T::kName && IsOp(".", 1)) {
      n->targets.push_back(Take().value);
      ++i_;
      ASSIGN_OR_RETURN(n->target_attribute, TakeName());
    } else {
      RETURN_IF_ERROR(ParseTargets(&n->targets));
    }
    if (IsOp("=")) {
      ++i_;
      ASSIGN_OR_RETURN(n->expr, ParseTupleOrExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
      return n;
    }
    // A block set: {% set x [| filter ...] %}...{% endset %}.
    if (n->targets.size() != 1 || !n->target_attribute.empty()) {
      return Error(Peek(), "a block set takes one name");
    }
    while (IsOp("|")) {
      ++i_;
      ExprPtr f;
      ASSIGN_OR_RETURN(f, ParseFilter(nullptr));
      n->filters.push_back(std::move(f));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody(&n->body, {"endset"}, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::Status ParseParams(std::vector<std::pair<std::string, ExprPtr>>* params) {
    RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      ASSIGN_OR_RETURN(std::string name, TakeName());
      ExprPtr def;
      if (IsOp("=")) {
        ++i_;
        ASSIGN_OR_RETURN(def, ParseExpression());
      }
      params->emplace_back(std::move(name), std::move(def));
      if (!IsOp(",")) break;
      ++i_;
    }
    return Expect(")");
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseMacro(const Token& at) {
    auto n = NewNode(Node::Kind::kMacro, at);
    ASSIGN_OR_RETURN(n->name, TakeName());
    RETURN_IF_ERROR(ParseParams(&n->params));
    RETURN_IF_ERROR(ExpectBlockEnd());
    const int loops = loops_;
    loops_ = 0;
    std::string end;
    RETURN_IF_ERROR(ParseBody(&n->body, {"endmacro"}, &end));
    loops_ = loops;
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseCallBlock(const Token& at) {
    auto n = NewNode(Node::Kind::kCallBlock, at);
    if (IsOp("(")) RETURN_IF_ERROR(ParseParams(&n->params));
    ASSIGN_OR_RETURN(n->expr, ParseExpression());
    if (n->expr->kind != Expr::Kind::kCall) return Error(at, "{% call %} needs a macro call");
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody(&n->body, {"endcall"}, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseFilterBlock(const Token& at) {
    auto n = NewNode(Node::Kind::kFilterBlock, at);
    while (true) {
      ExprPtr f;
      ASSIGN_OR_RETURN(f, ParseFilter(nullptr));
      n->filters.push_back(std::move(f));
      if (!IsOp("|")) break;
      ++i_;
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody(&n->body, {"endfilter"}, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  // --- expressions ---------------------------------------------------------

  ExprPtr NewExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` (a tuple) where an assignment allows one, else an expression.
  absl::StatusOr<ExprPtr> ParseTupleOrExpression() {
    const int line = Peek().line;
    ExprPtr first;
    ASSIGN_OR_RETURN(first, ParseExpression());
    if (!IsOp(",")) return first;
    auto tuple = NewExpr(Expr::Kind::kTuple, line);
    tuple->items.push_back(std::move(first));
    while (IsOp(",")) {
      ++i_;
      if (Peek().type == T::kBlockEnd) break;
      ExprPtr next;
      ASSIGN_OR_RETURN(next, ParseExpression());
      tuple->items.push_back(std::move(next));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    if (++depth_ > kMaxDepth) return Error(Peek(), "expression nested too deeply");
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseOr());
    while (IsName("if")) {
      const int line = Take().line;
      auto cond = NewExpr(Expr::Kind::kCond, line);
      ExprPtr test, otherwise;
      ASSIGN_OR_RETURN(test, ParseOr());
      if (IsName("else")) {
        ++i_;
        ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      cond->items.push_back(std::move(e));
      cond->items.push_back(std::move(test));
      cond->items.push_back(std::move(otherwise));
      e = std::move(cond);
    }
    --depth_;
    return e;
  }

  absl::StatusOr<ExprPtr> Binary(ExprPtr left, const std::string& op, absl::StatusOr<ExprPtr> right,
                                 int line) {
    if (!right.ok()) return right.status();
    auto e = NewExpr(Expr::Kind::kBinary, line);
    e->name = op;
    e->a = std::move(left);
    e->b = *std::move(right);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseAnd());
    while (IsName("or")) {
      const int line = Take().line;
      ASSIGN_OR_RETURN(e, Binary(std::move(e), "or", ParseAnd(), line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseNot());
    while (IsName("and")) {
      const int line = Take().line;
      ASSIGN_OR_RETURN(e, Binary(std::move(e), "and", ParseNot(), line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const int line = Take().line;
      auto e = NewExpr(Expr::Kind::kUnary, line);
      e->name = "not";
      ASSIGN_OR_RETURN(e->a, ParseNot());
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseMath1());
    while (true) {
      const Token& t = Peek();
      const int line = t.line;
      if (t.type == T::kOp && (t.value == "==" || t.value == "!=" || t.value == "<" ||
                               t.value == ">" || t.value == "<=" || t.value == ">=")) {
        const std::string op = Take().value;
        ASSIGN_OR_RETURN(e, Binary(std::move(e), op, ParseMath1(), line));
      } else if (IsName("in")) {
        ++i_;
        ASSIGN_OR_RETURN(e, Binary(std::move(e), "in", ParseMath1(), line));
      } else if (IsName("not") && IsName("in", 1)) {
        i_ += 2;
        ASSIGN_OR_RETURN(e, Binary(std::move(e), "not in", ParseMath1(), line));
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Take();
      ASSIGN_OR_RETURN(e, Binary(std::move(e), t.value, ParseConcat(), t.line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseMath2());
    while (IsOp("~")) {
      const int line = Take().line;
      ASSIGN_OR_RETURN(e, Binary(std::move(e), "~", ParseMath2(), line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Take();
      ASSIGN_OR_RETURN(e, Binary(std::move(e), t.value, ParsePow(), t.line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ExprPtr e;
    ASSIGN_OR_RETURN(e, ParseUnary(true));
    while (IsOp("**")) {
      const int line = Take().line;
      ASSIGN_OR_RETURN(e, Binary(std::move(e), "**", ParseUnary(true), line));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Take();
      e = NewExpr(Expr::Kind::kUnary, t.line);
      e->name = t.value;
      ASSIGN_OR_RETURN(e->a, ParseUnary(false));
    } else {
      ASSIGN_OR_RETURN(e, ParsePrimary());
    }
    ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    if (with_filter) {
      ASSIGN_OR_RETURN(e, ParseFilterExpr(std::move(e)));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    if (++depth_ > kMaxDepth) return Error(Peek(), "expression nested too deeply");
    const Token& t = Peek();
    ExprPtr e;
    switch (t.type) {
      case T::kName: {
        ++i_;
        if (t.value == "true" || t.value == "True") {
          e = Literal(Value(true), t.line);
        } else if (t.value == "false" || t.value == "False") {
          e = Literal(Value(false), t.line);
        } else if (t.value == "none" || t.value == "None") {
          e = Literal(Value::None(), t.line);
        } else {
          e = NewExpr(Expr::Kind::kName, t.line);
          e->name = t.value;
        }
        break;
      }
      case T::kString: {
        std::string s = Take().value;
        while (Peek().type == T::kString) s += Take().value;  // adjacent strings join
        e = Literal(Value(std::move(s)), t.line);
        break;
      }
      case T::kInt: {
        int64_t v = 0;
        if (!absl::SimpleAtoi(t.value, &v)) return Error(t, "integer out of range: " + t.value);
        ++i_;
        e = Literal(Value(v), t.line);
        break;
      }
      case T::kFloat: {
        double v = 0;
        if (!absl::SimpleAtod(t.value, &v)) return Error(t, "bad number: " + t.value);
        ++i_;
        e = Literal(Value(v), t.line);
        break;
      }
      case T::kOp:
        if (t.value == "(") {
          ++i_;
          if (IsOp(")")) {
            ++i_;
            e = NewExpr(Expr::Kind::kTuple, t.line);
            break;
          }
          ExprPtr first;
          ASSIGN_OR_RETURN(first, ParseExpression());
          if (IsOp(",")) {
            e = NewExpr(Expr::Kind::kTuple, t.line);
            e->items.push_back(std::move(first));
            while (IsOp(",")) {
              ++i_;
              if (IsOp(")")) break;
              ExprPtr item;
              ASSIGN_OR_RETURN(item, ParseExpression());
              e->items.push_back(std::move(item));
            }
          } else {
            e = std::move(first);
          }
          RETURN_IF_ERROR(Expect(")"));
          break;
        }
        if (t.value == "[") {
          ++i_;
          e = NewExpr(Expr::Kind::kList, t.line);
          while (!IsOp("]")) {
            ExprPtr item;
            ASSIGN_OR_RETURN(item, ParseExpression());
            e->items.push_back(std::move(item));
            if (!IsOp(",")) break;
            ++i_;
          }
          RETURN_IF_ERROR(Expect("]"));
          break;
        }
        if (t.value == "{") {
          ++i_;
          e = NewExpr(Expr::Kind::kDict, t.line);
          while (!IsOp("}")) {
            ExprPtr key, value;
            ASSIGN_OR_RETURN(key, ParseExpression());
            RETURN_IF_ERROR(Expect(":"));
            ASSIGN_OR_RETURN(value, ParseExpression());
            e->items.push_back(std::move(key));
            e->items.push_back(std::move(value));
            if (!IsOp(",")) break;
            ++i_;
          }
          RETURN_IF_ERROR(Expect("}"));
          break;
        }
        [[fallthrough]];
      default:
        return Error(t, "unexpected " + Describe(t));
    }
    --depth_;
    return e;
  }

  ExprPtr Literal(Value v, int line) {
    auto e = NewExpr(Expr::Kind::kLiteral, line);
    e->value = std::move(v);
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      const Token& t = Peek();
      if (IsOp(".")) {
        ++i_;
        const Token& name = Take();
        if (name.type != T::kName && name.type != T::kInt) {
          return Error(name, "expected an attribute name after '.'");
        }
        if (name.type == T::kInt) {
          auto item = NewExpr(Expr::Kind::kItem, t.line);
          item->a = std::move(e);
          int64_t index = 0;
          (void)absl::SimpleAtoi(name.value, &index);
          item->b = Literal(Value(index), t.line);
          e = std::move(item);
        } else {
          auto attr = NewExpr(Expr::Kind::kAttr, t.line);
          attr->a = std::move(e);
          attr->name = name.value;
          e = std::move(attr);
        }
      } else if (IsOp("[")) {
        ++i_;
        ASSIGN_OR_RETURN(e, ParseSubscript(std::move(e), t.line));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(e, ParseCall(std::move(e)));
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr e, int line) {
    // a[i] or a[start:stop:step].
    ExprPtr parts[3];
    int part = 0;
    bool slice = false;
    while (!IsOp("]")) {
      if (IsOp(":")) {
        slice = true;
        if (++part > 2) return Error(Peek(), "too many ':' in a slice");
        ++i_;
        continue;
      }
      ASSIGN_OR_RETURN(parts[part], ParseExpression());
    }
    ++i_;
    if (!slice) {
      if (parts[0] == nullptr) return Error(Peek(), "empty subscript");
      auto item = NewExpr(Expr::Kind::kItem, line);
      item->a = std::move(e);
      item->b = std::move(parts[0]);
      return item;
    }
    auto s = NewExpr(Expr::Kind::kSlice, line);
    s->a = std::move(e);
    for (auto& p : parts) s->items.push_back(std::move(p));
    return s;
  }

  absl::Status ParseArgs(CallArgs* args) {
    RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      if (Peek().type == T::kName && IsOp("=", 1)) {
        std::string name = Take().value;
        ++i_;
        ExprPtr value;
        ASSIGN_OR_RETURN(value, ParseExpression());
        args->keyword.emplace_back(std::move(name), std::move(value));
      } else {
        if (!args->keyword.empty()) {
          return Error(Peek(), "a positional argument after a keyword argument");
        }
        ExprPtr value;
        ASSIGN_OR_RETURN(value, ParseExpression());
        args->positional.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      ++i_;
    }
    return Expect(")");
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    auto e = NewExpr(Expr::Kind::kCall, Peek().line);
    e->a = std::move(callee);
    RETURN_IF_ERROR(ParseArgs(&e->args));
    return e;
  }

  // One filter after '|': name, optional (args); `operand` may be null (a
  // filter block's).
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr operand) {
    const Token& t = Peek();
    auto e = NewExpr(Expr::Kind::kFilter, t.line);
    ASSIGN_OR_RETURN(e->name, TakeName());
    while (IsOp(".")) {  // dotted filter names
      ++i_;
      ASSIGN_OR_RETURN(std::string part, TakeName());
      e->name += "." + part;
    }
    if (IsOp("(")) RETURN_IF_ERROR(ParseArgs(&e->args));
    e->a = std::move(operand);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        ++i_;
        ASSIGN_OR_RETURN(e, ParseFilter(std::move(e)));
      } else if (IsName("is")) {
        const int line = Take().line;
        auto test = NewExpr(Expr::Kind::kTest, line);
        if (IsName("not")) {
          ++i_;
          test->negated = true;
        }
        ASSIGN_OR_RETURN(test->name, TakeName());
        if (IsOp("(")) {
          RETURN_IF_ERROR(ParseArgs(&test->args));
        } else if (StartsTestArgument()) {
          ExprPtr arg;
          ASSIGN_OR_RETURN(arg, ParseUnary(false));
          test->args.positional.push_back(std::move(arg));
        }
        test->a = std::move(e);
        e = std::move(test);
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(e, ParseCall(std::move(e)));
      } else {
        return e;
      }
    }
  }

  // `x is divisibleby 3`: a test takes one bare argument unless what follows
  // ends the expression.
  bool StartsTestArgument() const {
    const Token& t = Peek();
    if (t.type == T::kString || t.type == T::kInt || t.type == T::kFloat) return true;
    if (t.type == T::kOp) return t.value == "[" || t.value == "{" || t.value == "-";
    if (t.type != T::kName) return false;
    static const std::set<std::string> kStop = {"else", "or", "and", "if", "in", "not", "is"};
    return kStop.count(t.value) == 0;
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  int loops_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Program>> Parse(const std::string& source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace strata::jinja
