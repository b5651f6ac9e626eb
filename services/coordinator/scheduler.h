// The coordinator's scheduler as plain logic, with no I/O: sequences queue
// FIFO, up to `max_sequences` run at once (the KV budget every worker was
// sized for), and each step batches sequences that are not already in the
// pipeline: decode tokens first, then prefill chunks, up to
// `max_batch_tokens` of them (plus `max_decode_rows` decode tokens beside).
// Up to `max_inflight_steps` steps travel the pipeline at once, each with its
// own share of the running sequences, so every stage can work on a different
// micro-batch.
//
// After a failover the same holds for replays: a sequence is re-fed as a
// prefill of its prompt and generated ids, and sampling is a function of
// (seed, position), so it continues with the tokens it would have produced.
//
// A prompt is prefilled in chunks of exactly `max_batch_tokens` (the last one
// shorter), as the single-process generator does, so results match it bit
// for bit. Finished and cancelled sequences are dropped from every worker by
// the next step (drop ids ride along with it, ahead of its chunks).
//
// Not thread-safe: the coordinator serialises calls.
#ifndef STRATA_SERVICES_COORDINATOR_SCHEDULER_H_
#define STRATA_SERVICES_COORDINATOR_SCHEDULER_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/sampler.h"

namespace strata {

enum class Finish { kNone, kLength, kEos, kCancelled };

struct SequenceSpec {
  uint64_t session = 0;     // the gateway session that owns it
  uint64_t request_id = 0;  // unique within the session
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 0;
  bool ignore_eos = false;
  int logprobs = -1;                    // -1: none; else each token's log-probability and the top N
  std::vector<int32_t> stop_token_ids;  // generating one of these ends the sequence (EOS-like)
  int64_t min_tokens = 0;    // before this many, EOS and stop_token_ids cannot be sampled
  int prompt_logprobs = -1;  // -1: none; else each prompt token's (after the first) and top N
  std::chrono::steady_clock::time_point submitted;  // for the queue-time metric
};

struct PlannedChunk {
  uint64_t seq_id = 0;
  int64_t start_pos = 0;
  std::vector<int32_t> token_ids;
  bool sample = false;
  SamplingParams sampling;
  int logprobs = -1;            // when sample: as SequenceSpec::logprobs
  std::vector<int32_t> banned;  // when sample: ids that must not be sampled (min_tokens)
  int64_t prompt_tokens = 0;    // when sample: the sequence's prompt length
  // >= 0: return the log-probabilities (top N) of the prompt tokens this
  // chunk predicts: its own after the first, and next_token (-1: none).
  int prompt_logprobs = -1;
  int32_t next_token = -1;
};

struct PlannedStep {
  uint64_t step_id = 0;
  std::vector<PlannedChunk> chunks;
  std::vector<uint64_t> drops;
};

// What to tell a gateway about one of its requests.
struct Emission {
  uint64_t session = 0, request_id = 0;
  std::vector<int32_t> tokens;
  Finish finish = Finish::kNone;
  absl::Status error;   // not OK: the request failed
  uint64_t seq_id = 0;  // the sequence the tokens came from (OnResult)
};

struct SchedulerOptions {
  int64_t max_sequences = 16;
  int64_t max_batch_tokens = 512;
  // Decode tokens a step may carry on top of its max_batch_tokens of prompt
  // chunks, so that decoding sequences ride along with a full prefill chunk
  // instead of waiting for steps of their own; 0: they share max_batch_tokens.
  // Workers size their workspaces for both.
  int64_t max_decode_rows = 0;
  // A requested count (-1: the default) resolved: min(max_sequences,
  // max_batch_tokens) unless given.
  static int64_t DefaultDecodeRows(int64_t requested, int64_t max_sequences,
                                   int64_t max_batch_tokens) {
    return requested >= 0 ? requested : std::min(max_sequences, max_batch_tokens);
  }
  int64_t max_context = 256;
  int max_inflight_steps = 1;
  std::vector<int32_t> eos_ids;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options) : options_(options) {}

  void Submit(SequenceSpec spec);
  void Cancel(uint64_t session, uint64_t request_id);
  void CancelSession(uint64_t session);
  // The next step to send, if one may be sent now.
  std::optional<PlannedStep> NextStep();
  // The last stage's tokens for `step_id`: (seq id, sampled token) pairs.
  std::vector<Emission> OnResult(uint64_t step_id,
                                 std::span<const std::pair<uint64_t, int32_t>> tokens);
  // A chunk's prompt log-probabilities for `seq_id`, `count` of them from
  // position `first`: which request they are for and which of them are new
  // ([skip, skip + count) of the ones given; a replay after a failover
  // computes some again). Call before OnResult for the same step.
  struct PromptLogprobsTarget {
    uint64_t session = 0, request_id = 0;
    int64_t skip = 0, count = 0;
  };
  std::optional<PromptLogprobsTarget> TakePromptLogprobs(uint64_t seq_id, int64_t first,
                                                         int64_t count);
  // A stage failed the step: its sequences fail with `error`.
  std::vector<Emission> OnStepFailed(uint64_t step_id, const absl::Status& error);
  // Every request fails with `error` (the pipeline is gone); state is reset.
  std::vector<Emission> FailAll(const absl::Status& error);
  // Drains: queued and running requests end with Finish::kCancelled.
  std::vector<Emission> CancelAll();
  // The pipeline was rebuilt (a new epoch): nothing is in flight any more and
  // no worker holds KV, so every running sequence is replayed from its first
  // token (prompt and generated ids, as a prefill) by the next steps.
  // Cancelled sequences are forgotten.
  void Rewind();
  // A smaller (or larger) KV budget; running sequences over it go back to the
  // front of the queue. Call after Rewind().
  void SetMaxSequences(int64_t n);
  int64_t max_sequences() const { return options_.max_sequences; }
  // The sequences admitted (queue -> running) for the first time since the
  // last call. Callers must take them regularly (they accumulate).
  struct Admission {
    uint64_t session = 0, request_id = 0;
    std::chrono::steady_clock::time_point submitted;
  };
  std::vector<Admission> TakeAdmissions();
  void set_max_inflight_steps(int n) { options_.max_inflight_steps = std::max(1, n); }

  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  int64_t queued() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t inflight_steps() const { return static_cast<int64_t>(inflight_.size()); }
  bool idle() const { return running_.empty() && waiting_.empty() && inflight_.empty(); }

  // A sequence with everything it has generated, as one replica hands it to
  // another.
  struct Sequence {
    SequenceSpec spec;
    std::vector<int32_t> generated;
    int64_t fed = 0;                   // tokens sent into the pipeline
    int64_t prompt_logprobs_next = 1;  // the first prompt position not yet delivered
    bool in_flight = false;
    bool cancelled = false;
    int64_t known() const { return static_cast<int64_t>(spec.prompt.size() + generated.size()); }
    int32_t token(int64_t i) const;
  };
  // Every sequence this scheduler holds, running ones first (rewound: they
  // replay from their first token wherever they go), cancelled ones left out;
  // the scheduler is empty afterwards, as after FailAll.
  std::vector<Sequence> TakeAll();
  // Queues sequences another scheduler gave up, ahead of this one's own
  // waiting ones (they were admitted earlier).
  void Adopt(std::vector<Sequence> sequences);

 private:
  Finish CheckFinish(const Sequence& s) const;
  // The sequences of an in-flight step (none for an unknown id); the step is over.
  std::vector<uint64_t> TakeStep(uint64_t step_id);
  void Retire(uint64_t seq_id);
  std::optional<uint64_t> Find(uint64_t session, uint64_t request_id) const;

  SchedulerOptions options_;
  uint64_t next_seq_ = 1, next_step_ = 1;
  std::deque<std::pair<uint64_t, Sequence>> waiting_;
  std::map<uint64_t, Sequence> running_;                // by sequence id = admission order
  std::map<uint64_t, std::vector<uint64_t>> inflight_;  // step -> its sequences
  std::vector<uint64_t> drops_;
  std::vector<Admission> admissions_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_SCHEDULER_H_
