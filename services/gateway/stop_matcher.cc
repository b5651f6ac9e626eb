#include "services/gateway/stop_matcher.h"

namespace strata {

std::string StopMatcher::Push(std::string_view text) {
  if (matched()) return "";
  pending_.append(text);
  // The earliest complete match wins (the longest stop on a tie).
  size_t best = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t at = pending_.find(stops_[i]);
    if (at == std::string::npos) continue;
    if (at < best || (at == best && stops_[i].size() > stops_[matched_].size())) {
      best = at;
      matched_ = static_cast<int>(i);
    }
  }
  if (matched()) {
    std::string out = pending_.substr(0, best);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop.
  size_t keep_from = pending_.size();
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, pending_.size());
    for (size_t n = longest; n > 0; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        keep_from = std::min(keep_from, pending_.size() - n);
        break;
      }
    }
  }
  std::string out = pending_.substr(0, keep_from);
  pending_.erase(0, keep_from);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  if (!matched()) out.swap(pending_);
  return out;
}

}  // namespace strata
