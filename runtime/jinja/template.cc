#include "runtime/jinja/template.h"

#include <ctime>

#include "runtime/jinja/parser.h"
#include "runtime/status_macros.h"

namespace strata::jinja {

absl::StatusOr<Template> Template::Parse(const std::string& source) {
  ASSIGN_OR_RETURN(std::unique_ptr<Program> program, jinja::Parse(source));
  Template t;
  t.program_ = std::move(program);
  return t;
}

absl::StatusOr<std::string> Template::Render(const Dict& variables, const RenderLimits& limits,
                                             Interpreter::Clock clock) const {
  Interpreter in(limits, clock != nullptr ? std::move(clock) : StrftimeNow);
  return in.Render(*program_, variables);
}

std::string StrftimeNow(const std::string& format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[256];
  const size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &local);
  return std::string(buf, n);
}

}  // namespace strata::jinja
