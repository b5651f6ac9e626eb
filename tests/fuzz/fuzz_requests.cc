// Every message a Strata server takes from the network, as raw bytes: the
// gateway's GenerateRequest and TokenizeRequest (parsed as its raw methods
// parse them, then validated and tokenized), and what a worker or the
// coordinator accepts (LoadRequest, Step, ReleaseRequest, WorkerMessage,
// GatewayMessage, GetClusterInfoRequest), parsed and checked as they are.
// The first byte picks the message.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "runtime/config.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/bpe_trainer.h"
#include "services/common/convert.h"
#include "services/common/wire.h"
#include "services/gateway/gateway_service.h"
#include "services/worker/worker_service.h"
#include "strata/v1/coordinator.pb.h"
#include "strata/v1/worker.pb.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

struct Fixture {
  std::unique_ptr<strata::Tokenizer> tokenizer;
  strata::ServedModel model;
  strata::ModelConfig config;
};

const Fixture& Fixed() {
  static const Fixture* f = [] {
    auto* out = new Fixture();
    const std::string dir = strata::fuzz::ScratchDir() + "/model";
    std::filesystem::create_directories(dir);
    const strata::BpeVocabulary vocab = strata::TrainByteLevelBpe(
        {"The old lighthouse keeper.", "12345 ships"}, 30, strata::SplitPattern::kQwen2);
    strata::fuzz::WriteFile(
        dir, "tokenizer.json",
        strata::HfTokenizerJson(vocab, strata::SplitPattern::kQwen2, true, {}).Dump());
    out->tokenizer = *strata::LoadTokenizer(dir);
    out->model.context = 64;
    out->model.vocab_size = out->tokenizer->vocab_size();
    out->config.num_layers = 4;
    out->config.hidden_size = 64;
    out->config.intermediate_size = 128;
    out->config.num_heads = 4;
    out->config.num_kv_heads = 2;
    out->config.head_dim = 16;
    out->config.vocab_size = 512;
    out->config.max_position_embeddings = 256;
    return out;
  }();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Fixture& f = Fixed();
  switch (data[0] % 8) {
    case 0: {
      strata::v1::GenerateRequest r;
      if (strata::ParseRequest(bytes, &r).ok()) {
        (void)strata::ValidateAndTokenize(r, *f.tokenizer, f.model);
      }
      break;
    }
    case 1: {
      strata::v1::TokenizeRequest r;
      if (strata::ParseRequest(bytes, &r).ok()) (void)f.tokenizer->MinTokens(r.text());
      break;
    }
    case 2: {
      strata::v1::LoadRequest r;
      if (strata::ParseRequest(bytes, &r).ok()) {
        (void)strata::CheckLoadLimits(r, f.config, int64_t{8} << 30, int64_t{1} << 30);
      }
      break;
    }
    case 3: {
      strata::v1::Step s;
      if (strata::ParseRequest(bytes, &s).ok()) {
        for (const auto& c : s.chunks()) (void)strata::SamplingFromProto(c.sampling());
      }
      break;
    }
    case 4: {
      strata::v1::ReleaseRequest r;
      (void)strata::ParseRequest(bytes, &r);
      break;
    }
    case 5: {
      strata::v1::WorkerMessage m;
      (void)strata::ParseRequest(bytes, &m);
      break;
    }
    case 6: {
      strata::v1::GatewayMessage m;
      if (strata::ParseRequest(bytes, &m).ok() && m.has_submit()) {
        (void)strata::ValidateSamplingParams(strata::SamplingFromProto(m.submit().sampling()));
      }
      break;
    }
    case 7: {
      strata::v1::GetClusterInfoRequest r;
      (void)strata::ParseRequest(bytes, &r);
      break;
    }
  }
  return 0;
}
