// Helpers shared by the runtime tests: generated models in a per-process
// temporary folder (removed at exit), and file utilities.
#ifndef STRATA_TESTS_TEST_UTIL_H_
#define STRATA_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/quant.h"

namespace strata::testing {

// A generated model, made once per process per argument set.
const std::string& TestModel(const std::string& flavour, const std::string& dtype = "f32",
                             int shards = 1);
// A fresh empty folder under the process's temporary folder.
std::string FreshDir(const std::string& name);
// A copy of a model folder that a test may corrupt.
std::string CopyModel(const std::string& from, const std::string& name);
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& bytes);
// A packed quantized weight with random codes, scales and offsets (offsets
// only for the integer formats), and with `perm` a random act-order
// permutation of the input columns.
std::unique_ptr<PackedLinear> RandomPackedLinear(QuantFormat format, int64_t rows, int64_t cols,
                                                 int64_t group, bool perm, uint32_t seed);
// Runs a shell command; returns its exit status and captures stdout+stderr.
int RunCommand(const std::string& command, std::string* output);

}  // namespace strata::testing

#endif  // STRATA_TESTS_TEST_UTIL_H_
