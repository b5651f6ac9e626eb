// Helpers for the libFuzzer targets: a scratch model folder per process,
// where a target writes the fuzzed bytes as the file a loader reads.
#ifndef STRATA_TESTS_FUZZ_FUZZ_UTIL_H_
#define STRATA_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace strata::fuzz {

// A folder of its own (made once per process, under $TMPDIR or /tmp).
const std::string& ScratchDir();
// Replaces `dir`/`name` with `size` bytes.
void WriteFile(const std::string& dir, const std::string& name, const uint8_t* data, size_t size);
void WriteFile(const std::string& dir, const std::string& name, const std::string& text);
// Removes every file of `dir`.
void Clear(const std::string& dir);

}  // namespace strata::fuzz

#endif  // STRATA_TESTS_FUZZ_FUZZ_UTIL_H_
