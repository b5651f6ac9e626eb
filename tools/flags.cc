#include "tools/flags.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata {

void FlagSet::String(const char* name, std::string* dest, const char* help) {
  flags_.push_back({name, dest, help});
}
void FlagSet::Int(const char* name, int64_t* dest, const char* help) {
  flags_.push_back({name, dest, help});
}
void FlagSet::Float(const char* name, double* dest, const char* help) {
  flags_.push_back({name, dest, help});
}
void FlagSet::Bool(const char* name, bool* dest, const char* help) {
  flags_.push_back({name, dest, help});
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* flag = nullptr;
    for (Flag& f : flags_) {
      if (f.name == name) flag = &f;
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (auto* b = std::get_if<bool*>(&flag->dest)) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      **b = !has_value || value == "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (auto* s = std::get_if<std::string*>(&flag->dest)) {
      **s = value;
    } else if (auto* n = std::get_if<int64_t*>(&flag->dest)) {
      if (!absl::SimpleAtoi(value, *n)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, ": \"", value, "\" is not an integer"));
      }
    } else if (auto* d = std::get_if<double*>(&flag->dest)) {
      if (!absl::SimpleAtod(value, *d) || !std::isfinite(**d)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, ": \"", value, "\" is not a number"));
      }
    }
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const Flag& f : flags_) absl::StrAppend(&out, "  --", f.name, "  ", f.help, "\n");
  return out;
}

}  // namespace strata
