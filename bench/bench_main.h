// The main() of every benchmark: run, and on error print "<name>: <message>"
// and exit 1.
#ifndef STRATA_BENCH_BENCH_MAIN_H_
#define STRATA_BENCH_BENCH_MAIN_H_

#include <cstdio>
#include <string>

#include "absl/status/status.h"

namespace strata {

inline int BenchMain(const char* name, absl::Status (*run)(int, char**), int argc, char** argv) {
  const absl::Status s = run(argc, argv);
  if (s.ok()) return 0;
  std::fprintf(stderr, "%s: %s\n", name, std::string(s.message()).c_str());
  return 1;
}

}  // namespace strata

#endif  // STRATA_BENCH_BENCH_MAIN_H_
