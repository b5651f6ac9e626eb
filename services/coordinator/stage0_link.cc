#include "services/coordinator/stage0_link.h"

#include "services/common/convert.h"
#include "services/common/server.h"

namespace strata {

void StepToProto(const PlannedStep& step, uint64_t epoch, v1::Step* msg) {
  msg->Clear();
  msg->set_step_id(step.step_id);
  msg->set_epoch(epoch);
  for (uint64_t d : step.drops) msg->add_drop_seq_ids(d);
  for (const PlannedChunk& c : step.chunks) {
    v1::Chunk* chunk = msg->add_chunks();
    chunk->set_seq_id(c.seq_id);
    chunk->set_start_pos(c.start_pos);
    chunk->mutable_token_ids()->Add(c.token_ids.begin(), c.token_ids.end());
    chunk->set_sample(c.sample);
    if (c.sample) *chunk->mutable_sampling() = SamplingToProto(c.sampling);
    if (c.sample && c.logprobs >= 0) chunk->set_logprobs(c.logprobs);
    chunk->mutable_banned_ids()->Add(c.banned.begin(), c.banned.end());
    if (c.sample) chunk->set_prompt_tokens(static_cast<uint32_t>(c.prompt_tokens));
    if (c.prompt_logprobs >= 0) {
      chunk->set_prompt_logprobs(c.prompt_logprobs);
      if (c.next_token >= 0) chunk->set_next_token_id(c.next_token);
    }
  }
}

void Stage0Link::Open(const std::string& address, const std::string& hop_token) {
  std::lock_guard<std::mutex> lock(mu_);
  stub_ = v1::Worker::NewStub(Dial(address, security_.get()));
  context_ = std::make_unique<grpc::ClientContext>();
  context_->AddMetadata("strata-hop-token", hop_token);
  writer_ = stub_->Forward(context_.get(), &summary_);
  std::lock_guard<std::mutex> cancel(cancel_mu_);
  cancel_ = context_.get();
}

void Stage0Link::Close() {
  {
    std::lock_guard<std::mutex> cancel(cancel_mu_);
    if (cancel_ != nullptr) cancel_->TryCancel();
    cancel_ = nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (writer_ != nullptr) {
    writer_->Finish().IgnoreError();
    writer_.reset();
  }
  context_.reset();
  stub_.reset();
}

bool Stage0Link::Write(const v1::Step& step) {
  std::lock_guard<std::mutex> lock(mu_);
  return writer_ != nullptr && writer_->Write(step);
}

}  // namespace strata
