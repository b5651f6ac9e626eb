// Jinja's lexer, configured as transformers configures it for chat
// templates (trim_blocks and lstrip_blocks on): the template becomes text
// tokens and the tokens inside {{ }} and {% %}; comments are dropped and
// {% raw %} bodies kept as text. Whitespace control: `-` strips every
// whitespace character on that side, `+` turns lstrip_blocks/trim_blocks off
// for its tag; lstrip_blocks removes spaces and tabs between a line's start
// and a block or comment tag, trim_blocks one newline after one.
#ifndef STRATA_RUNTIME_JINJA_LEXER_H_
#define STRATA_RUNTIME_JINJA_LEXER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::jinja {

struct Token {
  enum class Type {
    kText,        // template data
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,
    kString,  // value: the unescaped string
    kInt,
    kFloat,
    kOp,  // value: the operator or punctuation ("==", "(", "|", ...)
    kEof,
  };
  Type type;
  std::string value;
  int line = 1, column = 1;
};

// INVALID_ARGUMENT "line L, column C: ..." for an unterminated tag, string
// or comment, or a character no token starts with.
absl::StatusOr<std::vector<Token>> Lex(const std::string& source);

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_LEXER_H_
