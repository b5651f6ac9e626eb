// A chat template as transformers runs it: parse once, render per request.
//
//   ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
//   ASSIGN_OR_RETURN(std::string prompt, t.Render(variables));
//
// Parse errors name the line and column; render errors are the
// interpreter's (raise_exception(): FAILED_PRECONDITION with the template's
// message). A Template is immutable and may be rendered from many threads.
#ifndef STRATA_RUNTIME_JINJA_TEMPLATE_H_
#define STRATA_RUNTIME_JINJA_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/jinja/ast.h"
#include "runtime/jinja/interpreter.h"
#include "runtime/jinja/value.h"

namespace strata::jinja {

class Template {
 public:
  static absl::StatusOr<Template> Parse(const std::string& source);

  // `clock` formats the time for strftime_now(); null: the local time now.
  absl::StatusOr<std::string> Render(const Dict& variables, const RenderLimits& limits = {},
                                     Interpreter::Clock clock = nullptr) const;

 private:
  std::shared_ptr<const Program> program_;
};

// strftime(format) of the local time now.
std::string StrftimeNow(const std::string& format);

}  // namespace strata::jinja

#endif  // STRATA_RUNTIME_JINJA_TEMPLATE_H_
