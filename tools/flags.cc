#include "tools/flags.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <iostream>

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

void FlagSet::Strings(const char* name, std::vector<std::string>* dest, const char* help) {
  flags_.push_back({name, dest, help});
}

std::string FlagSet::EnvName(const std::string& flag) {
  std::string env = "STRATA_";
  for (char c : flag)
    env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

absl::Status FlagSet::Set(Flag& flag, const std::string& value, const std::string& source) {
  if (auto* b = std::get_if<bool*>(&flag.dest)) {
    if (value != "true" && value != "false" && value != "1" && value != "0") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": \"", value, "\" is not true, false, 1 or 0"));
    }
    **b = value == "true" || value == "1";
  } else if (auto* str = std::get_if<std::string*>(&flag.dest)) {
    **str = value;
  } else if (auto* list = std::get_if<std::vector<std::string>*>(&flag.dest)) {
    (*list)->push_back(value);
  } else if (auto* n = std::get_if<int64_t*>(&flag.dest)) {
    if (!absl::SimpleAtoi(value, *n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": \"", value, "\" is not an integer"));
    }
  } else if (auto* d = std::get_if<double*>(&flag.dest)) {
    if (!absl::SimpleAtod(value, *d) || !std::isfinite(**d)) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": \"", value, "\" is not a number"));
    }
  }
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  // Environment first (STRATA_MAX_TOKENS for --max-tokens), so that the
  // command line wins; manifests and `strata up` then share one vocabulary.
  for (Flag& f : flags_) {
    const std::string env = EnvName(f.name);
    if (const char* v = std::getenv(env.c_str()); v != nullptr && *v) {
      absl::Status st = Set(f, v, env);
      if (!st.ok()) return st;
    }
  }
  std::vector<const Flag*> listed;  // repeatable flags given on the command line
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
    if (std::holds_alternative<bool*>(flag->dest)) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      *std::get<bool*>(flag->dest) = !has_value || value == "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (auto* list = std::get_if<std::vector<std::string>*>(&flag->dest);
        list != nullptr && std::find(listed.begin(), listed.end(), flag) == listed.end()) {
      (*list)->clear();  // the command line replaces the environment's value
      listed.push_back(flag);
    }
    absl::Status st = Set(*flag, value, "--" + name);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const Flag& f : flags_) {
    absl::StrAppend(&out, "  --", f.name, "  ", f.help, "  [$", EnvName(f.name), "]\n");
  }
  return out;
}

absl::Status ParseOrHelp(FlagSet& flags, const std::vector<std::string>& args, const char* usage,
                         bool* stop) {
  bool help = false;
  flags.Bool("help", &help, "this list");
  absl::Status parsed = flags.Parse(args);
  if (!parsed.ok()) return parsed;
  *stop = help;
  if (help) std::cout << usage << "\n" << flags.Usage();
  return absl::OkStatus();
}

absl::Status IntIn(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

}  // namespace strata
