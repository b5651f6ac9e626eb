// The scheduler's batching, finishing, cancellation and failure logic, with
// no servers: steps are "run" by handing back chosen tokens.
#include "services/coordinator/scheduler.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace strata {
namespace {

SequenceSpec Spec(uint64_t request, int prompt_len, int max_tokens, bool ignore_eos = false) {
  SequenceSpec s;
  s.session = 1;
  s.request_id = request;
  for (int i = 0; i < prompt_len; ++i) s.prompt.push_back(10 + i);
  s.max_tokens = max_tokens;
  s.ignore_eos = ignore_eos;
  return s;
}

SchedulerOptions Options(int max_sequences, int batch_tokens, int inflight = 1) {
  SchedulerOptions o;
  o.max_sequences = max_sequences;
  o.max_batch_tokens = batch_tokens;
  o.max_context = 64;
  o.max_inflight_steps = inflight;
  o.eos_ids = {2};
  return o;
}

// Every sampled chunk of `step` gets `token`.
std::vector<std::pair<uint64_t, int32_t>> Answer(const PlannedStep& step, int32_t token) {
  std::vector<std::pair<uint64_t, int32_t>> out;
  for (const PlannedChunk& c : step.chunks) {
    if (c.sample) out.emplace_back(c.seq_id, token);
  }
  return out;
}

// Prompt log-probabilities: each prefill chunk asks for them and names the
// prompt token after it; each position is delivered once, even when a
// failover replays the prompt; decode chunks do not ask.
TEST(SchedulerTest, PromptLogprobsAreAskedPerChunkAndDeliveredOnce) {
  Scheduler s(Options(4, 8));
  SequenceSpec spec = Spec(1, 20, 3, true);
  spec.prompt_logprobs = 2;
  s.Submit(spec);
  auto first = s.NextStep();
  ASSERT_TRUE(first.has_value());
  const PlannedChunk& c0 = first->chunks[0];
  EXPECT_EQ(c0.prompt_logprobs, 2);
  EXPECT_EQ(c0.next_token, 18);  // prompt[8]
  // Positions 1..8 come back (7 within the chunk, then next_token's).
  auto t = s.TakePromptLogprobs(c0.seq_id, 1, 8);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->request_id, 1u);
  EXPECT_EQ(t->skip, 0);
  EXPECT_EQ(t->count, 8);
  EXPECT_FALSE(s.TakePromptLogprobs(c0.seq_id, 1, 8).has_value());  // not twice
  EXPECT_TRUE(s.OnResult(first->step_id, {}).empty());
  // A failover before the next chunk: the replay starts over at position 0.
  s.Rewind();
  auto replay = s.NextStep();
  ASSERT_TRUE(replay.has_value());
  EXPECT_EQ(replay->chunks[0].start_pos, 0);
  EXPECT_EQ(replay->chunks[0].prompt_logprobs, 2);
  EXPECT_FALSE(s.TakePromptLogprobs(c0.seq_id, 1, 8).has_value());
  EXPECT_TRUE(s.OnResult(replay->step_id, {}).empty());
  auto second = s.NextStep();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->chunks[0].start_pos, 8);
  EXPECT_EQ(second->chunks[0].next_token, 26);  // prompt[16]
  t = s.TakePromptLogprobs(second->chunks[0].seq_id, 9, 8);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->count, 8);
  EXPECT_TRUE(s.OnResult(second->step_id, {}).empty());
  auto last = s.NextStep();
  ASSERT_TRUE(last.has_value());
  EXPECT_TRUE(last->chunks[0].sample);
  EXPECT_EQ(last->chunks[0].next_token, -1);  // the sampled token follows
  // Positions 17..19 (the chunk's own tokens after its first).
  t = s.TakePromptLogprobs(last->chunks[0].seq_id, 17, 3);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->count, 3);
  EXPECT_EQ(s.OnResult(last->step_id, Answer(*last, 7)).size(), 1u);
  auto decode = s.NextStep();
  ASSERT_TRUE(decode.has_value());
  EXPECT_EQ(decode->chunks[0].prompt_logprobs, -1);
}

TEST(SchedulerTest, PrefillChunksHaveFixedBoundariesAndOnlyTheLastSamples) {
  Scheduler s(Options(4, 8));
  s.Submit(Spec(1, 20, 4));
  std::vector<int64_t> starts, sizes;
  std::vector<bool> samples;
  for (int guard = 0; guard < 100; ++guard) {
    auto step = s.NextStep();
    ASSERT_TRUE(step.has_value());
    ASSERT_EQ(step->chunks.size(), 1u);
    starts.push_back(step->chunks[0].start_pos);
    sizes.push_back(static_cast<int64_t>(step->chunks[0].token_ids.size()));
    samples.push_back(step->chunks[0].sample);
    auto emitted = s.OnResult(step->step_id, Answer(*step, 7));
    if (!emitted.empty()) break;
  }
  EXPECT_EQ(starts, (std::vector<int64_t>{0, 8, 16}));
  EXPECT_EQ(sizes, (std::vector<int64_t>{8, 8, 4}));
  EXPECT_EQ(samples, (std::vector<bool>{false, false, true}));
  // Then one decode token per step, carrying the token just sampled.
  auto step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->chunks[0].start_pos, 20);
  EXPECT_EQ(step->chunks[0].token_ids, std::vector<int32_t>{7});
}

TEST(SchedulerTest, AdmitsUpToTheKvBudgetAndBatchesDecodesFirst) {
  Scheduler s(Options(2, 16));
  for (int r = 1; r <= 3; ++r) s.Submit(Spec(r, 4, 3));
  auto first = s.NextStep();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->chunks.size(), 2u);  // two prompts of 4; the third waits for a slot
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.queued(), 1);
  // The two admitted requests are reported once, with their ids.
  auto admitted = s.TakeAdmissions();
  ASSERT_EQ(admitted.size(), 2u);
  EXPECT_EQ(admitted[0].request_id, 1u);
  EXPECT_EQ(admitted[1].request_id, 2u);
  EXPECT_EQ(admitted[0].session, 1u);
  EXPECT_TRUE(s.TakeAdmissions().empty());
  EXPECT_FALSE(s.NextStep().has_value());  // one step in flight at a time
  auto emitted = s.OnResult(first->step_id, Answer(*first, 5));
  ASSERT_EQ(emitted.size(), 2u);
  auto second = s.NextStep();
  ASSERT_EQ(second->chunks.size(), 2u);
  for (const PlannedChunk& c : second->chunks) EXPECT_EQ(c.token_ids.size(), 1u);
}

// With decode rows beside the prompt chunk, a decoding sequence rides along
// with another's full chunk instead of taking a step of its own; the chunks
// keep their fixed boundaries.
TEST(SchedulerTest, DecodeTokensRideAlongAFullPromptChunk) {
  for (int64_t decode_rows : {0, 4}) {
    SchedulerOptions o = Options(4, 8);
    o.max_decode_rows = decode_rows;
    Scheduler s(o);
    s.Submit(Spec(1, 4, 8, true));
    s.Submit(Spec(2, 16, 8, true));
    auto first = s.NextStep();  // A's prompt; B's first chunk would pass 8 prompt tokens
    ASSERT_TRUE(first.has_value());
    ASSERT_EQ(first->chunks.size(), 1u);
    s.OnResult(first->step_id, Answer(*first, 5));
    std::vector<std::vector<int64_t>> shapes;  // per step: each chunk's size
    std::vector<int64_t> b_starts;
    for (int k = 0; k < 3; ++k) {
      auto step = s.NextStep();
      ASSERT_TRUE(step.has_value());
      shapes.emplace_back();
      for (const PlannedChunk& c : step->chunks) {
        shapes.back().push_back(static_cast<int64_t>(c.token_ids.size()));
        if (c.seq_id == 2 && c.token_ids.size() > 1) b_starts.push_back(c.start_pos);
      }
      s.OnResult(step->step_id, Answer(*step, 5));
    }
    if (decode_rows == 0) {
      // A's decode token leaves too little room for B's whole chunk, which
      // waits while A decodes.
      EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{1}, {1}, {1}}));
      EXPECT_TRUE(b_starts.empty());
    } else {
      EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{1, 8}, {1, 8}, {1, 1}}));
      EXPECT_EQ(b_starts, (std::vector<int64_t>{0, 8}));
    }
  }
}

TEST(SchedulerTest, MicroBatchesSplitTheRunningSequences) {
  Scheduler s(Options(8, 64, /*inflight=*/2));
  for (int r = 1; r <= 4; ++r) s.Submit(Spec(r, 3, 5));
  auto a = s.NextStep();
  auto b = s.NextStep();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->chunks.size(), 2u);
  EXPECT_EQ(b->chunks.size(), 2u);
  EXPECT_FALSE(s.NextStep().has_value());
  std::vector<uint64_t> ids;
  for (const auto* st : {&*a, &*b}) {
    for (const auto& c : st->chunks) ids.push_back(c.seq_id);
  }
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());  // no sequence twice
}

TEST(SchedulerTest, FinishesOnEosLengthAndContextAndDropsEverywhere) {
  Scheduler s(Options(4, 64));
  s.Submit(Spec(1, 3, 10));                       // will see EOS
  s.Submit(Spec(2, 3, 10, /*ignore_eos=*/true));  // ignores it, stops at length
  auto step = s.NextStep();
  auto e = s.OnResult(step->step_id, Answer(*step, 2));
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].finish, Finish::kEos);
  EXPECT_EQ(e[1].finish, Finish::kNone);
  // The finished sequence is dropped by the next step, ahead of its chunks.
  step = s.NextStep();
  EXPECT_EQ(step->drops, std::vector<uint64_t>{1});
  int generated = 1;
  for (int guard = 0; guard < 100; ++guard) {  // bounded: a broken finish must not hang
    ASSERT_TRUE(step.has_value());
    auto out = s.OnResult(step->step_id, Answer(*step, 9));
    ++generated;
    if (!out.empty() && out[0].finish != Finish::kNone) {
      EXPECT_EQ(out[0].finish, Finish::kLength);
      break;
    }
    step = s.NextStep();
  }
  EXPECT_EQ(generated, 10);
  // Context: 60 prompt tokens in a 64-token context leave room for 4.
  s.Submit(Spec(3, 60, 100));
  int tokens = 0;
  for (int guard = 0; guard < 100; ++guard) {
    step = s.NextStep();
    ASSERT_TRUE(step.has_value());
    auto out = s.OnResult(step->step_id, Answer(*step, 9));
    tokens += out.empty() ? 0 : 1;
    if (!out.empty() && out[0].finish != Finish::kNone) {
      EXPECT_EQ(out[0].finish, Finish::kLength);
      break;
    }
  }
  EXPECT_EQ(tokens, 4);
}

TEST(SchedulerTest, CancelInFlightRetiresWhenTheStepReturns) {
  Scheduler s(Options(4, 64));
  s.Submit(Spec(1, 3, 10));
  s.Submit(Spec(2, 3, 10));
  auto step = s.NextStep();
  s.Cancel(1, 1);
  EXPECT_EQ(s.running(), 2);  // still in the pipeline
  auto e = s.OnResult(step->step_id, Answer(*step, 9));
  ASSERT_EQ(e.size(), 1u);  // nothing is sent for the cancelled request
  EXPECT_EQ(e[0].request_id, 2u);
  EXPECT_EQ(s.running(), 1);
  step = s.NextStep();
  EXPECT_EQ(step->drops, std::vector<uint64_t>{1});
  s.OnResult(step->step_id, Answer(*step, 9));
  // Cancelling a sequence between steps drops it with a step of its own.
  s.CancelSession(1);
  EXPECT_EQ(s.running(), 0);
  step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_TRUE(step->chunks.empty());
  EXPECT_EQ(step->drops, std::vector<uint64_t>{2});
  s.OnResult(step->step_id, {});
  EXPECT_TRUE(s.idle());
  EXPECT_FALSE(s.NextStep().has_value());
}

TEST(SchedulerTest, AFailedStepFailsItsRequests) {
  Scheduler s(Options(4, 64));
  s.Submit(Spec(1, 3, 10));
  auto step = s.NextStep();
  auto e = s.OnStepFailed(step->step_id, absl::FailedPreconditionError("epoch"));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].error.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.running(), 0);
  s.Submit(Spec(2, 3, 10));
  auto all = s.FailAll(absl::UnavailableError("worker left"));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(s.idle());
}

// The KV budget reached exactly: max_sequences requests all run at once;
// one more waits until one of them ends.
TEST(SchedulerTest, TheSequenceBudgetIsFilledExactlyAndNotPassed) {
  Scheduler s(Options(4, 64));
  for (int r = 1; r <= 4; ++r) s.Submit(Spec(r, 3, 2, true));
  auto step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->chunks.size(), 4u);
  EXPECT_EQ(s.running(), 4);
  EXPECT_EQ(s.queued(), 0);
  s.Submit(Spec(5, 3, 2, true));
  s.OnResult(step->step_id, Answer(*step, 7));
  step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(s.running(), 4);
  EXPECT_EQ(s.queued(), 1);
  for (const PlannedChunk& c : step->chunks) EXPECT_NE(c.seq_id, 5u);
  auto out = s.OnResult(step->step_id, Answer(*step, 7));  // each reaches max_tokens 2
  EXPECT_EQ(out.size(), 4u);
  step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(s.running(), 1);
  EXPECT_EQ(s.queued(), 0);
  ASSERT_EQ(step->chunks.size(), 1u);
  EXPECT_EQ(step->drops.size(), 4u);
}

// The context filled exactly: a prompt of context - 1 tokens gets exactly one
// token, and no sequence is ever fed past the context.
TEST(SchedulerTest, TheContextIsFilledExactlyAndNotPassed) {
  for (int prompt : {63, 60, 1}) {
    Scheduler s(Options(4, 16));  // max_context 64
    s.Submit(Spec(1, prompt, 1000, true));
    int64_t generated = 0, fed_end = 0;
    bool finished = false;
    while (!finished) {
      auto step = s.NextStep();
      ASSERT_TRUE(step.has_value()) << "prompt " << prompt;
      for (const PlannedChunk& c : step->chunks) {
        fed_end =
            std::max<int64_t>(fed_end, c.start_pos + static_cast<int64_t>(c.token_ids.size()));
      }
      for (const Emission& e : s.OnResult(step->step_id, Answer(*step, 7))) {
        generated += static_cast<int64_t>(e.tokens.size());
        if (e.finish != Finish::kNone) {
          EXPECT_EQ(e.finish, Finish::kLength);
          finished = true;
        }
      }
    }
    EXPECT_EQ(prompt + generated, 64) << "prompt " << prompt;
    EXPECT_EQ(fed_end, 63) << "prompt " << prompt;  // the last token is sampled, never fed
  }
}

// A failover replay forgets a sequence cancelled while its step was in the
// lost pipeline: it is neither replayed nor left running.
TEST(SchedulerTest, ReplayForgetsASequenceCancelledInFlight) {
  Scheduler s(Options(4, 64));
  s.Submit(Spec(1, 3, 10, true));
  s.Submit(Spec(2, 3, 10, true));
  auto step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  s.Cancel(1, 1);  // its step is in flight
  s.Rewind();      // and the pipeline is lost
  EXPECT_EQ(s.running(), 1);
  step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  ASSERT_EQ(step->chunks.size(), 1u);
  EXPECT_EQ(step->chunks[0].start_pos, 0);  // sequence 2 replayed from its first token
  for (int guard = 0; guard < 100 && !s.idle(); ++guard) {
    ASSERT_TRUE(step.has_value());
    s.OnResult(step->step_id, Answer(*step, 9));
    step = s.NextStep();
    if (!step.has_value()) break;
  }
  if (step.has_value()) s.OnResult(step->step_id, Answer(*step, 9));
  EXPECT_TRUE(s.idle());
}

// More decode-ready sequences than a step has tokens: each step stays within
// max_batch_tokens (the stages refuse bigger ones).
TEST(SchedulerTest, DecodeStepsStayWithinTheBatch) {
  Scheduler s(Options(8, 4, /*inflight=*/2));
  for (int r = 1; r <= 8; ++r) s.Submit(Spec(r, 1, 6, true));
  // Two prefill steps in flight at once make all eight decode-ready together.
  auto a = s.NextStep(), b = s.NextStep();
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_EQ(a->chunks.size() + b->chunks.size(), 8u);
  s.OnResult(a->step_id, Answer(*a, 9));
  s.OnResult(b->step_id, Answer(*b, 9));
  s.set_max_inflight_steps(1);  // one step may now take every sequence
  for (int guard = 0; guard < 200 && !s.idle(); ++guard) {
    auto step = s.NextStep();
    ASSERT_TRUE(step.has_value());
    int64_t tokens = 0;
    for (const PlannedChunk& c : step->chunks) tokens += static_cast<int64_t>(c.token_ids.size());
    ASSERT_LE(tokens, 4) << "step " << step->step_id;
    s.OnResult(step->step_id, Answer(*step, 9));
  }
  EXPECT_TRUE(s.idle());
}

// Mixed prompts and decodes: no step passes max_batch_tokens of prompt, nor
// that plus max_decode_rows in all; every request still finishes.
TEST(SchedulerTest, StepsStayWithinThePromptAndDecodeBudgets) {
  SchedulerOptions o = Options(6, 8, /*inflight=*/2);
  o.max_decode_rows = 3;
  o.max_context = 64;
  Scheduler s(o);
  for (int r = 1; r <= 12; ++r) s.Submit(Spec(r, 1 + (r * 7) % 20, 2 + r % 5, true));
  int mixed = 0;
  std::vector<PlannedStep> flying;
  for (int guard = 0; guard < 1000 && !s.idle(); ++guard) {
    while (auto step = s.NextStep()) flying.push_back(*std::move(step));
    ASSERT_FALSE(flying.empty());
    const PlannedStep step = flying.front();
    flying.erase(flying.begin());
    int64_t prompt = 0, decode = 0;
    for (const PlannedChunk& c : step.chunks) {
      (c.token_ids.size() == 1 && c.sample && c.start_pos > 0 ? decode : prompt) +=
          static_cast<int64_t>(c.token_ids.size());
    }
    EXPECT_LE(prompt, 8 + 1) << "step " << step.step_id;  // a 1-token prompt looks like a decode
    EXPECT_LE(prompt + decode, 8 + 3) << "step " << step.step_id;
    mixed += prompt >= 2 && decode > 0;
    s.OnResult(step.step_id, Answer(step, 9));
  }
  EXPECT_TRUE(s.idle());
  EXPECT_GT(mixed, 0) << "some steps carried a chunk and decode tokens together";
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// min_tokens bans EOS and the stop tokens from the sampled chunks until that
// many tokens exist; a stop token then ends the sequence as EOS does.
TEST(SchedulerTest, MinTokensBansEndingTokensAndStopTokensEndTheSequence) {
  Scheduler s(Options(4, 64));
  SequenceSpec spec = Spec(1, 3, 10);
  spec.stop_token_ids = {7};
  spec.min_tokens = 2;
  s.Submit(spec);
  std::vector<std::vector<int32_t>> banned;
  std::vector<Emission> out;
  for (int32_t token : {5, 6, 7}) {
    auto step = s.NextStep();
    ASSERT_TRUE(step.has_value());
    ASSERT_EQ(step->chunks.size(), 1u);
    banned.push_back(step->chunks[0].banned);
    out = s.OnResult(step->step_id, Answer(*step, token));
  }
  EXPECT_EQ(banned[0], (std::vector<int32_t>{2, 7}));  // nothing generated yet
  EXPECT_EQ(banned[1], (std::vector<int32_t>{2, 7}));  // one of two
  EXPECT_TRUE(banned[2].empty());                      // two: free to end
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].finish, Finish::kEos);  // the stop token 7 ended it
  EXPECT_EQ(out[0].seq_id, 1u);
  // ignore_eos leaves EOS free to be sampled, but not the stop tokens.
  SequenceSpec free_eos = Spec(2, 3, 10, /*ignore_eos=*/true);
  free_eos.stop_token_ids = {7};
  free_eos.min_tokens = 1;
  s.Submit(free_eos);
  auto step = s.NextStep();
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->chunks[0].banned, (std::vector<int32_t>{7}));
}

}  // namespace
}  // namespace strata
