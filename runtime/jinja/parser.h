// Jinja's grammar over the lexer's tokens, with Jinja2's operator
// precedence (lowest first): inline if, or, and, not, comparisons and `in`,
// + and -, ~, * / // %, **, unary - and +, then postfix (attribute, item,
// slice, call) and filters and tests. Statements: if/elif/else, for (with
// tuple targets, a filter, else), set (plain, tuple, namespace attribute,
// block), macro, call, filter, raw, break/continue and transformers'
// {% generation %}. Errors name the line and column.
#ifndef STRATA_RUNTIME_JINJA_PARSER_H_
#define STRATA_RUNTIME_JINJA_PARSER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/jinja/ast.h"

namespace strata::jinja {

absl::StatusOr<std::unique_ptr<Program>> Parse(const std::string& source);

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_PARSER_H_
