#include "services/common/convert.h"

namespace strata {

SamplingParams SamplingFromProto(const v1::SamplingParameters& p) {
  SamplingParams s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.seed = p.seed();
  s.min_p = p.min_p();
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  return s;
}

v1::SamplingParameters SamplingToProto(const SamplingParams& s) {
  v1::SamplingParameters p;
  p.set_temperature(s.temperature);
  p.set_top_k(s.top_k);
  p.set_top_p(s.top_p);
  p.set_repetition_penalty(s.repetition_penalty);
  p.set_seed(s.seed);
  p.set_min_p(s.min_p);
  p.set_presence_penalty(s.presence_penalty);
  p.set_frequency_penalty(s.frequency_penalty);
  return p;
}

}  // namespace strata
