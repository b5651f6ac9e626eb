#include "tools/bigram_init.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace strata {
namespace {

// Orthonormalises the columns of q (rows x cols, row-major), in place.
void GramSchmidt(std::vector<double>& q, int64_t rows, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t k = 0; k < j; ++k) {
      double dot = 0;
      for (int64_t i = 0; i < rows; ++i) dot += q[i * cols + j] * q[i * cols + k];
      for (int64_t i = 0; i < rows; ++i) q[i * cols + j] -= dot * q[i * cols + k];
    }
    double norm = 0;
    for (int64_t i = 0; i < rows; ++i) norm += q[i * cols + j] * q[i * cols + j];
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < rows; ++i) q[i * cols + j] = norm > 1e-12 ? q[i * cols + j] / norm : 0;
  }
}

// out (n x h) = a (n x n) * b (n x h), or a^T * b when `transpose`.
void MatMul(const std::vector<double>& a, const std::vector<double>& b, int64_t n, int64_t h,
            bool transpose, std::vector<double>* out) {
  out->assign(n * h, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      const double x = transpose ? a[k * n + i] : a[i * n + k];
      if (x == 0) continue;
      const double* brow = &b[k * h];
      double* orow = &(*out)[i * h];
      for (int64_t j = 0; j < h; ++j) orow[j] += x * brow[j];
    }
  }
}

}  // namespace

absl::StatusOr<std::map<std::string, std::vector<float>>> BigramWeights(
    const ModelConfig& config, const Tokenizer& tokenizer, const std::vector<std::string>& lines) {
  if (config.tie_word_embeddings) {
    return absl::InvalidArgumentError("bigram init needs untied embeddings (llama or mistral)");
  }
  const int64_t v = config.vocab_size, h = config.hidden_size;
  if (h > v) return absl::InvalidArgumentError("bigram init needs hidden_size <= vocab_size");
  const int32_t eos =
      config.eos_token_ids.empty() ? 2 : static_cast<int32_t>(config.eos_token_ids[0]);

  // Bigram counts over every line: BOS, the line's tokens, EOS.
  std::vector<double> counts(v * v, 0.0);
  for (const std::string& line : lines) {
    auto ids = tokenizer.Encode(line, /*add_bos=*/true);
    if (!ids.ok()) return ids.status();
    ids->push_back(eos);
    for (size_t i = 0; i + 1 < ids->size(); ++i) {
      const int32_t a = (*ids)[i], b = (*ids)[i + 1];
      if (a >= 0 && a < v && b >= 0 && b < v) counts[a * v + b] += 1;
    }
  }
  // Centred, smoothed log-probabilities.
  constexpr double kAlpha = 0.002;
  std::vector<double> logp(v * v);
  for (int64_t a = 0; a < v; ++a) {
    double total = 0;
    for (int64_t b = 0; b < v; ++b) total += counts[a * v + b];
    double mean = 0;
    for (int64_t b = 0; b < v; ++b) {
      logp[a * v + b] = std::log((counts[a * v + b] + kAlpha) / (total + kAlpha * v));
      mean += logp[a * v + b];
    }
    mean /= static_cast<double>(v);
    for (int64_t b = 0; b < v; ++b) logp[a * v + b] -= mean;
  }

  // Subspace iteration for the dominant right singular subspace.
  std::vector<double> q(v * h), y, z;
  uint64_t state = 0x5eed;
  for (double& x : q) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  }
  GramSchmidt(q, v, h);
  for (int it = 0; it < 30; ++it) {
    MatMul(logp, q, v, h, /*transpose=*/false, &y);  // L Q
    MatMul(logp, y, v, h, /*transpose=*/true, &z);   // L^T L Q
    q = z;
    GramSchmidt(q, v, h);
  }
  MatMul(logp, q, v, h, false, &y);  // rows: each token's coordinates

  std::map<std::string, std::vector<float>> out;
  std::vector<float>& embed = out["model.embed_tokens.weight"];
  std::vector<float>& head = out["lm_head.weight"];
  embed.resize(v * h);
  head.resize(v * h);
  std::vector<double> scales;
  for (int64_t a = 0; a < v; ++a) {
    double ss = 0;
    for (int64_t j = 0; j < h; ++j) ss += y[a * h + j] * y[a * h + j];
    const double rms = std::sqrt(ss / static_cast<double>(h));
    scales.push_back(rms);
    for (int64_t j = 0; j < h; ++j) {
      embed[a * h + j] = rms > 1e-9 ? static_cast<float>(y[a * h + j] / rms) : 0.0f;
    }
  }
  std::nth_element(scales.begin(), scales.begin() + v / 2, scales.end());
  const double scale = 2.0 * scales[v / 2];  // sharper than the smoothed rows
  for (int64_t b = 0; b < v; ++b) {
    for (int64_t j = 0; j < h; ++j) head[b * h + j] = static_cast<float>(q[b * h + j] * scale);
  }
  out["model.norm.weight"].assign(h, 1.0f);
  return out;
}

}  // namespace strata
