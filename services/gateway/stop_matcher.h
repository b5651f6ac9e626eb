// Stop sequences over streamed text. Text goes in as it is decoded; what
// comes out is text that can no longer be part of a stop sequence, so a stop
// split across deltas ("...END" + "OF" + "TEXT...") is still caught and never
// shown. Only a tail that could begin a stop sequence is held back, and since
// a stop sequence starts on a character boundary, released text is always
// whole UTF-8. Not thread-safe; one per request.
#ifndef STRATA_SERVICES_GATEWAY_STOP_MATCHER_H_
#define STRATA_SERVICES_GATEWAY_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace strata {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds text; returns what may be shown. After a match, returns the text
  // before the stop sequence and ignores anything later.
  std::string Push(std::string_view text);
  // The stream ended without a match: releases the held tail.
  std::string Flush();

  bool matched() const { return matched_ >= 0; }
  const std::string& matched_stop() const { return stops_[matched_]; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  int matched_ = -1;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_STOP_MATCHER_H_
