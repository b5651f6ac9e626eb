// Weights that make a generated decoder speak: the embedding and LM head of
// a bigram model of the corpus, so the embedded default model continues a
// prompt with words of the corpus rather than random bytes. The decoder
// layers stay random but write only faintly into the residual stream, so
// the last hidden state is (almost) the current token's embedding and the
// head turns it into next-token log-probabilities.
//
// The bigram log-probabilities (add-alpha smoothed, rows centred) form a
// vocab x vocab matrix L; subspace iteration finds an orthonormal basis Q of
// its top `hidden_size` right singular directions, and L ~ (L Q) Q^T gives
// the embedding (rows of L Q, scaled to unit RMS for the final RMSNorm) and
// the head (Q times the typical row scale). Deterministic.
#ifndef STRATA_TOOLS_BIGRAM_INIT_H_
#define STRATA_TOOLS_BIGRAM_INIT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.h"
#include "runtime/tokenizer.h"

namespace strata {

// model.embed_tokens.weight, lm_head.weight and model.norm.weight, row-major.
// Needs untied embeddings.
absl::StatusOr<std::map<std::string, std::vector<float>>> BigramWeights(
    const ModelConfig& config, const Tokenizer& tokenizer, const std::vector<std::string>& lines);

}  // namespace strata

#endif  // STRATA_TOOLS_BIGRAM_INIT_H_
