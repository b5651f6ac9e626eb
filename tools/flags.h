// A small parser for `strata SUBCOMMAND --flag value` command lines. Each flag
// is declared with its destination; errors name the flag. Every flag also
// reads an environment variable, STRATA_ and its name in capitals with `_`
// for `-` (--max-tokens: STRATA_MAX_TOKENS); the command line wins.
#ifndef STRATA_TOOLS_FLAGS_H_
#define STRATA_TOOLS_FLAGS_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"

namespace strata {

class FlagSet {
 public:
  void String(const char* name, std::string* dest, const char* help);
  void Int(const char* name, int64_t* dest, const char* help);
  void Float(const char* name, double* dest, const char* help);
  void Bool(const char* name, bool* dest, const char* help);  // present = true
  // Repeatable: each --name VALUE appends one value, taken whole (no
  // splitting at commas). The environment variable gives one value.
  void Strings(const char* name, std::vector<std::string>* dest, const char* help);
  // Parses args (without the program and subcommand names).
  absl::Status Parse(const std::vector<std::string>& args);
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::variant<std::string*, int64_t*, double*, bool*, std::vector<std::string>*> dest;
    std::string help;
  };
  static std::string EnvName(const std::string& flag);
  static absl::Status Set(Flag& flag, const std::string& value, const std::string& source);
  std::vector<Flag> flags_;
};

// Parses flags, adding --help; prints `usage` and the flags and sets `*stop`
// when --help was given.
absl::Status ParseOrHelp(FlagSet& flags, const std::vector<std::string>& args, const char* usage,
                         bool* stop);
// INVALID_ARGUMENT naming --flag unless lo <= v <= hi.
absl::Status IntIn(const char* flag, int64_t v, int64_t lo, int64_t hi);

}  // namespace strata

#endif  // STRATA_TOOLS_FLAGS_H_
