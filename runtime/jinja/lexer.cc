#include "runtime/jinja/lexer.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"

namespace strata::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  // Newlines as Jinja normalises them: \r\n and \r become \n.
  static std::string Normalize(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\r') {
        out += '\n';
        if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
      } else {
        out += s[i];
      }
    }
    return out;
  }

  explicit Lexer(const std::string& s) : s_(Normalize(s)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    while (true) {
      const size_t tag = NextTag(pos);
      std::string text = s_.substr(pos, (tag == std::string::npos ? s_.size() : tag) - pos);
      ApplyLeft(&text);
      if (tag == std::string::npos) {
        Emit(Token::Type::kText, std::move(text), pos);
        break;
      }
      const char kind = s_[tag + 1];
      char modifier = tag + 2 < s_.size() ? s_[tag + 2] : 0;
      if (modifier == '+' && kind == '{') modifier = 0;  // {{+x}} is a unary plus
      if (modifier == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (kind != '{' && modifier != '+') {
        LStrip(&text, tag);
      }
      Emit(Token::Type::kText, std::move(text), pos);
      const size_t inner = tag + 2 + (modifier == '-' || modifier == '+' ? 1 : 0);
      if (kind == '#') {
        const size_t end = s_.find("#}", inner);
        if (end == std::string::npos) return Error(tag, "the comment is never closed with #}");
        SetRight(end > inner && s_[end - 1] == '-', end > inner && s_[end - 1] == '+', true);
        pos = end + 2;
        continue;
      }
      auto next = kind == '{' ? Expression(tag, inner, "}}") : Expression(tag, inner, "%}");
      if (!next.ok()) return next.status();
      pos = *next;
      if (kind == '%' && IsRawStart()) {
        auto after = Raw(pos);
        if (!after.ok()) return after.status();
        pos = *after;
      }
    }
    Emit(Token::Type::kEof, "", s_.size());
    return std::move(tokens_);
  }

 private:
  size_t NextTag(size_t from) const {
    for (size_t i = s_.find('{', from); i != std::string::npos; i = s_.find('{', i + 1)) {
      if (i + 1 < s_.size() && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  // Whitespace control of the previous tag on the text after it.
  void ApplyLeft(std::string* text) {
    if (strip_next_) {
      size_t n = 0;
      while (n < text->size() && IsSpace((*text)[n])) ++n;
      text->erase(0, n);
    } else if (trim_next_) {
      if (text->rfind("\r\n", 0) == 0) {
        text->erase(0, 2);
      } else if (!text->empty() && (*text)[0] == '\n') {
        text->erase(0, 1);
      }
    }
    strip_next_ = trim_next_ = false;
  }

  // lstrip_blocks: spaces and tabs between the line's start and a block tag.
  void LStrip(std::string* text, size_t tag) const {
    size_t start = tag;
    while (start > 0 && (s_[start - 1] == ' ' || s_[start - 1] == '\t')) --start;
    if (start > 0 && s_[start - 1] != '\n') return;
    const size_t n = std::min(tag - start, text->size());
    text->erase(text->size() - n);
  }

  void SetRight(bool minus, bool plus, bool block) {
    strip_next_ = minus;
    trim_next_ = !minus && !plus && block;
  }

  // The tokens of one tag from `inner`; returns the offset after its end.
  absl::StatusOr<size_t> Expression(size_t tag, size_t inner, const char* end) {
    const bool block = end[0] == '%';
    Emit(block ? Token::Type::kBlockBegin : Token::Type::kVarBegin, "", tag);
    size_t i = inner;
    int open = 0;  // brackets open: "}}" inside {'a': {}} does not end the tag
    while (true) {
      while (i < s_.size() && IsSpace(s_[i])) ++i;
      if (i >= s_.size()) {
        return Error(tag, absl::StrCat("the tag is never closed with ", end));
      }
      // The end, with its whitespace control.
      for (char m : {'-', '+', '\0'}) {
        if (open > 0) break;
        const size_t at = i + (m ? 1 : 0);
        if ((m == 0 || s_[i] == m) && s_.compare(at, 2, end) == 0) {
          if (m == '+' && !block) break;
          Emit(block ? Token::Type::kBlockEnd : Token::Type::kVarEnd, "", i);
          SetRight(m == '-', m == '+', block);
          return at + 2;
        }
      }
      auto next = Next(i);
      if (!next.ok()) return next.status();
      const std::string& v = tokens_.back().value;
      if (tokens_.back().type == Token::Type::kOp && v.size() == 1) {
        if (v[0] == '(' || v[0] == '[' || v[0] == '{') ++open;
        if ((v[0] == ')' || v[0] == ']' || v[0] == '}') && open > 0) --open;
      }
      i = *next;
    }
  }

  absl::StatusOr<size_t> Next(size_t i) {
    const char c = s_[i];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[j])) || s_[j] == '_'))
        ++j;
      Emit(Token::Type::kName, s_.substr(i, j - i), i);
      return j;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return Number(i);
    if (c == '\'' || c == '"') return String(i);
    static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                       "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                       "]",  "{",  "}",  ",",  ".",  ":",  "|"};
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (s_.compare(i, n, op) == 0) {
        Emit(Token::Type::kOp, op, i);
        return i + n;
      }
    }
    return Error(i, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::StatusOr<size_t> Number(size_t i) {
    size_t j = i;
    std::string digits;
    auto run = [&] {
      while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) {
        if (s_[j] != '_') digits += s_[j];
        ++j;
      }
    };
    run();
    bool is_float = false;
    if (j + 1 < s_.size() && s_[j] == '.' && std::isdigit(static_cast<unsigned char>(s_[j + 1]))) {
      is_float = true;
      digits += s_[j++];
      run();
    }
    if (j < s_.size() && (s_[j] == 'e' || s_[j] == 'E')) {
      size_t k = j + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && std::isdigit(static_cast<unsigned char>(s_[k]))) {
        is_float = true;
        digits += 'e';
        digits += s_.substr(j + 1, k - j - 1);
        j = k;
        run();
      }
    }
    Emit(is_float ? Token::Type::kFloat : Token::Type::kInt, digits, i);
    return j;
  }

  absl::StatusOr<size_t> String(size_t i) {
    const char quote = s_[i];
    std::string out;
    size_t j = i + 1;
    auto hex = [&](size_t at, int n, uint32_t* cp) {
      if (at + n > s_.size()) return false;
      *cp = 0;
      for (int k = 0; k < n; ++k) {
        const char h = s_[at + k];
        if (!std::isxdigit(static_cast<unsigned char>(h))) return false;
        *cp = *cp * 16 + (std::isdigit(static_cast<unsigned char>(h))
                              ? h - '0'
                              : std::tolower(static_cast<unsigned char>(h)) - 'a' + 10);
      }
      return true;
    };
    while (j < s_.size() && s_[j] != quote) {
      if (s_[j] != '\\' || j + 1 >= s_.size()) {
        out += s_[j++];
        continue;
      }
      const char e = s_[j + 1];
      j += 2;
      uint32_t cp = 0;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '0':
          out += '\0';
          break;
        case '\n':
          break;  // a line continuation
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (!hex(j, n, &cp)) return Error(j - 2, "a truncated \\x, \\u or \\U escape");
          j += n;
          AppendUtf8(cp, &out);
          break;
        }
        default:
          out += '\\';
          out += e;
      }
    }
    if (j >= s_.size()) return Error(i, "the string is never closed");
    Emit(Token::Type::kString, std::move(out), i);
    return j + 1;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Whether the block just lexed is `{% raw %}`.
  bool IsRawStart() const {
    const size_t n = tokens_.size();
    return n >= 3 && tokens_[n - 1].type == Token::Type::kBlockEnd &&
           tokens_[n - 2].type == Token::Type::kName && tokens_[n - 2].value == "raw" &&
           tokens_[n - 3].type == Token::Type::kBlockBegin;
  }

  // {% raw %}...{% endraw %}: the body is text; returns the offset after endraw.
  absl::StatusOr<size_t> Raw(size_t pos) {
    const size_t raw_at = tokens_[tokens_.size() - 3].line;  // for the error
    tokens_.resize(tokens_.size() - 3);
    for (size_t at = s_.find("{%", pos); at != std::string::npos; at = s_.find("{%", at + 2)) {
      size_t i = at + 2;
      const char modifier = i < s_.size() && (s_[i] == '-' || s_[i] == '+') ? s_[i++] : 0;
      while (i < s_.size() && IsSpace(s_[i])) ++i;
      if (s_.compare(i, 6, "endraw") != 0) continue;
      i += 6;
      while (i < s_.size() && IsSpace(s_[i])) ++i;
      const char end_mod = i < s_.size() && (s_[i] == '-' || s_[i] == '+') ? s_[i++] : 0;
      if (s_.compare(i, 2, "%}") != 0) continue;
      std::string text = s_.substr(pos, at - pos);
      ApplyLeft(&text);
      if (modifier == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (modifier != '+') {
        LStrip(&text, at);
      }
      Emit(Token::Type::kText, std::move(text), pos);
      SetRight(end_mod == '-', end_mod == '+', true);
      return i + 2;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("line ", raw_at, ": {% raw %} is never closed with {% endraw %}"));
  }

  void Emit(Token::Type type, std::string value, size_t offset) {
    if (type == Token::Type::kText && value.empty()) return;
    Token t{type, std::move(value)};
    const auto line = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
    t.line = static_cast<int>(line - line_starts_.begin()) + 1;
    t.column = static_cast<int>(offset - *line) + 1;
    tokens_.push_back(std::move(t));
  }

  absl::Status Error(size_t offset, const std::string& message) const {
    const auto line = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
    return absl::InvalidArgumentError(absl::StrCat("line ", line - line_starts_.begin() + 1,
                                                   ", column ", offset - *line + 1, ": ", message));
  }

  const std::string s_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  bool strip_next_ = false, trim_next_ = false;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(const std::string& source) { return Lexer(source).Run(); }

}  // namespace strata::jinja
