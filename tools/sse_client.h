// A small client of the gateway's HTTP API for benchmarks and tests: POST a
// JSON body and read the Server-Sent Events back as they arrive (Boost.Beast,
// blocking, one connection per call). Thread-safe: calls share nothing.
#ifndef STRATA_TOOLS_SSE_CLIENT_H_
#define STRATA_TOOLS_SSE_CLIENT_H_

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace strata {

struct SseReply {
  int status = 0;     // the HTTP status (0: no answer)
  bool done = false;  // `data: [DONE]` arrived
};

// Each `data:` event but [DONE], parsed, with the time its bytes arrived;
// returning false hangs up (the connection is shut down at once).
using SseHandler =
    std::function<bool(const nlohmann::json& event, std::chrono::steady_clock::time_point at)>;

// POSTs `body` to http://`address``target` (with `authorization: Bearer
// api_key` unless empty) and hands each event to `on_event`.
SseReply PostSse(const std::string& address, const std::string& target, const std::string& body,
                 const std::string& api_key, const SseHandler& on_event);

}  // namespace strata

#endif  // STRATA_TOOLS_SSE_CLIENT_H_
