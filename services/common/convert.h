// Conversions between the wire types of proto/strata/v1 and the runtime's
// plain structs, so handlers stay thin.
#ifndef STRATA_SERVICES_COMMON_CONVERT_H_
#define STRATA_SERVICES_COMMON_CONVERT_H_

#include "runtime/sampler.h"
#include "strata/v1/generation.pb.h"

namespace strata {

// Fills the documented defaults of unset optional fields.
SamplingParams SamplingFromProto(const v1::SamplingParameters& p);
v1::SamplingParameters SamplingToProto(const SamplingParams& p);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_CONVERT_H_
