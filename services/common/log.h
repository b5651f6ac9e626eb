// Line-oriented logging to stderr, prefixed with the process's role and the
// time: "[strata worker-1 12:00:01.234] loaded layers [2, 4)". Thread-safe.
#ifndef STRATA_SERVICES_COMMON_LOG_H_
#define STRATA_SERVICES_COMMON_LOG_H_

#include <string>

namespace strata {

void SetLogName(const std::string& name);
void Log(const std::string& message);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_LOG_H_
