#include "services/coordinator/scheduler.h"

#include <algorithm>

namespace strata {

int32_t Scheduler::Sequence::token(int64_t i) const {
  const int64_t p = static_cast<int64_t>(spec.prompt.size());
  return i < p ? spec.prompt[i] : generated[i - p];
}

void Scheduler::Submit(SequenceSpec spec) {
  Sequence s;
  s.spec = std::move(spec);
  waiting_.emplace_back(next_seq_++, std::move(s));
}

std::optional<uint64_t> Scheduler::Find(uint64_t session, uint64_t request_id) const {
  for (const auto& [id, s] : running_) {
    if (s.spec.session == session && s.spec.request_id == request_id) return id;
  }
  return std::nullopt;
}

void Scheduler::Retire(uint64_t seq_id) {
  auto it = running_.find(seq_id);
  if (it == running_.end()) return;
  if (it->second.fed > 0) drops_.push_back(seq_id);
  running_.erase(it);
}

void Scheduler::Cancel(uint64_t session, uint64_t request_id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->second.spec.session == session && it->second.spec.request_id == request_id) {
      waiting_.erase(it);
      return;
    }
  }
  if (auto id = Find(session, request_id)) {
    Sequence& s = running_.at(*id);
    if (s.in_flight) {
      s.cancelled = true;  // retired when its step comes back
    } else {
      Retire(*id);
    }
  }
}

void Scheduler::CancelSession(uint64_t session) {
  std::erase_if(waiting_, [&](const auto& w) { return w.second.spec.session == session; });
  std::vector<uint64_t> ids;
  for (const auto& [id, s] : running_) {
    if (s.spec.session == session) ids.push_back(id);
  }
  for (uint64_t id : ids) Cancel(session, running_.at(id).spec.request_id);
}

std::optional<PlannedStep> Scheduler::NextStep() {
  if (inflight_steps() >= options_.max_inflight_steps) return std::nullopt;
  while (!waiting_.empty() && running() < options_.max_sequences) {
    if (waiting_.front().second.generated.empty()) {
      const auto& spec = waiting_.front().second.spec;
      admissions_.push_back({spec.session, spec.request_id, spec.submitted});
    }
    running_.emplace(waiting_.front().first, std::move(waiting_.front().second));
    waiting_.pop_front();
  }
  // An even share of the running sequences per in-flight step.
  const int64_t share = std::max<int64_t>(
      1, (running() + options_.max_inflight_steps - 1) / options_.max_inflight_steps);
  PlannedStep step;
  int64_t tokens = 0, prefill_tokens = 0;
  const int64_t step_rows = options_.max_batch_tokens + options_.max_decode_rows;
  std::vector<uint64_t> members;
  auto add = [&](uint64_t id, Sequence& s, int64_t n) {
    PlannedChunk c;
    c.seq_id = id;
    c.start_pos = s.fed;
    c.token_ids.reserve(n);
    for (int64_t i = s.fed; i < s.fed + n; ++i) c.token_ids.push_back(s.token(i));
    c.sample = s.fed + n == s.known();
    c.sampling = s.spec.sampling;
    c.logprobs = s.spec.logprobs;
    c.prompt_tokens = static_cast<int64_t>(s.spec.prompt.size());
    const int64_t prompt_len = static_cast<int64_t>(s.spec.prompt.size());
    if (s.spec.prompt_logprobs >= 0 && s.prompt_logprobs_next < prompt_len &&
        s.fed + 1 < prompt_len) {
      c.prompt_logprobs = s.spec.prompt_logprobs;
      if (!c.sample && s.fed + n < prompt_len) c.next_token = s.token(s.fed + n);
    }
    if (c.sample && static_cast<int64_t>(s.generated.size()) < s.spec.min_tokens) {
      // Too early to end: neither EOS nor a stop token may come next.
      if (!s.spec.ignore_eos) c.banned = options_.eos_ids;
      c.banned.insert(c.banned.end(), s.spec.stop_token_ids.begin(), s.spec.stop_token_ids.end());
    }
    step.chunks.push_back(std::move(c));
    s.fed += n;
    s.in_flight = true;
    tokens += n;
    members.push_back(id);
  };
  // Decode tokens first: they are cheap and keep running streams moving.
  for (auto& [id, s] : running_) {
    if (static_cast<int64_t>(members.size()) >= share) break;
    if (!s.in_flight && s.known() - s.fed == 1 && !s.generated.empty() && tokens < step_rows) {
      add(id, s, 1);
    }
  }
  for (auto& [id, s] : running_) {
    if (static_cast<int64_t>(members.size()) >= share) break;
    if (s.in_flight || s.known() == s.fed) continue;
    // Prefill chunks have the generator's fixed boundaries; one that does
    // not fit the rest of this step waits for the next.
    const int64_t n = std::min(s.known() - s.fed, options_.max_batch_tokens);
    if (prefill_tokens + n > options_.max_batch_tokens || tokens + n > step_rows) continue;
    add(id, s, n);
    prefill_tokens += n;
  }
  if (step.chunks.empty() && drops_.empty()) return std::nullopt;
  step.step_id = next_step_++;
  step.drops = std::move(drops_);
  drops_.clear();
  inflight_.emplace(step.step_id, std::move(members));
  return step;
}

std::vector<uint64_t> Scheduler::TakeStep(uint64_t step_id) {
  auto it = inflight_.find(step_id);
  if (it == inflight_.end()) return {};
  std::vector<uint64_t> members = std::move(it->second);
  inflight_.erase(it);
  return members;
}

Finish Scheduler::CheckFinish(const Sequence& s) const {
  const int32_t last = s.generated.back();
  if (!s.spec.ignore_eos &&
      std::find(options_.eos_ids.begin(), options_.eos_ids.end(), last) != options_.eos_ids.end()) {
    return Finish::kEos;
  }
  if (std::find(s.spec.stop_token_ids.begin(), s.spec.stop_token_ids.end(), last) !=
      s.spec.stop_token_ids.end()) {
    return Finish::kEos;  // a stop token ends it as EOS does ("stop")
  }
  if (static_cast<int64_t>(s.generated.size()) >= s.spec.max_tokens) return Finish::kLength;
  // The next token would sit at position known(); it must be inside the context.
  if (s.known() >= options_.max_context) return Finish::kLength;
  return Finish::kNone;
}

std::optional<Scheduler::PromptLogprobsTarget> Scheduler::TakePromptLogprobs(uint64_t seq_id,
                                                                             int64_t first,
                                                                             int64_t count) {
  auto it = running_.find(seq_id);
  if (it == running_.end() || it->second.cancelled || it->second.spec.prompt_logprobs < 0) {
    return std::nullopt;
  }
  Sequence& s = it->second;
  // Positions [first, first + count) given; prompt positions [next, prompt) due.
  const int64_t lo = std::max(first, s.prompt_logprobs_next);
  const int64_t hi = std::min(first + count, static_cast<int64_t>(s.spec.prompt.size()));
  if (lo >= hi || lo != s.prompt_logprobs_next) return std::nullopt;  // nothing new, or a gap
  s.prompt_logprobs_next = hi;
  return PromptLogprobsTarget{s.spec.session, s.spec.request_id, lo - first, hi - lo};
}

std::vector<Emission> Scheduler::OnResult(uint64_t step_id,
                                          std::span<const std::pair<uint64_t, int32_t>> tokens) {
  std::vector<Emission> out;
  for (uint64_t id : TakeStep(step_id)) {
    auto sit = running_.find(id);
    if (sit == running_.end()) continue;
    Sequence& s = sit->second;
    s.in_flight = false;
    if (s.cancelled) {
      Retire(id);
      continue;
    }
    if (s.fed != s.known()) continue;  // a prefill chunk that samples nothing
    auto tok =
        std::find_if(tokens.begin(), tokens.end(), [&](const auto& t) { return t.first == id; });
    if (tok == tokens.end()) {
      out.push_back({s.spec.session,
                     s.spec.request_id,
                     {},
                     Finish::kNone,
                     absl::InternalError("the last stage returned no token for the sequence")});
      Retire(id);
      continue;
    }
    s.generated.push_back(tok->second);
    Emission e{s.spec.session, s.spec.request_id, {tok->second},
               CheckFinish(s), absl::OkStatus(),  id};
    if (e.finish != Finish::kNone) Retire(id);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<Emission> Scheduler::OnStepFailed(uint64_t step_id, const absl::Status& error) {
  std::vector<Emission> out;
  for (uint64_t id : TakeStep(step_id)) {
    auto sit = running_.find(id);
    if (sit == running_.end()) continue;
    if (!sit->second.cancelled) {
      out.push_back(
          {sit->second.spec.session, sit->second.spec.request_id, {}, Finish::kNone, error});
    }
    Retire(id);
  }
  return out;
}

std::vector<Emission> Scheduler::FailAll(const absl::Status& error) {
  std::vector<Emission> out;
  for (auto& [id, s] : waiting_)
    out.push_back({s.spec.session, s.spec.request_id, {}, Finish::kNone, error});
  for (auto& [id, s] : running_) {
    if (!s.cancelled) out.push_back({s.spec.session, s.spec.request_id, {}, Finish::kNone, error});
  }
  waiting_.clear();
  running_.clear();
  inflight_.clear();
  drops_.clear();
  return out;
}

std::vector<Emission> Scheduler::CancelAll() {
  std::vector<Emission> out;
  for (auto& [id, s] : waiting_) {
    out.push_back({s.spec.session, s.spec.request_id, {}, Finish::kCancelled, absl::OkStatus()});
  }
  waiting_.clear();
  std::vector<uint64_t> ids;
  for (auto& [id, s] : running_) {
    if (!s.cancelled) {
      out.push_back({s.spec.session, s.spec.request_id, {}, Finish::kCancelled, absl::OkStatus()});
    }
    ids.push_back(id);
  }
  for (uint64_t id : ids) {
    Sequence& s = running_.at(id);
    if (s.in_flight) {
      s.cancelled = true;
    } else {
      Retire(id);
    }
  }
  return out;
}

std::vector<Scheduler::Admission> Scheduler::TakeAdmissions() {
  std::vector<Admission> out;
  out.swap(admissions_);
  return out;
}

void Scheduler::Rewind() {
  inflight_.clear();
  drops_.clear();
  for (auto it = running_.begin(); it != running_.end();) {
    if (it->second.cancelled) {
      it = running_.erase(it);
      continue;
    }
    it->second.fed = 0;
    it->second.in_flight = false;
    ++it;
  }
}

std::vector<Scheduler::Sequence> Scheduler::TakeAll() {
  std::vector<Sequence> out;
  for (auto& [id, s] : running_) {
    if (s.cancelled) continue;
    s.fed = 0;
    s.in_flight = false;
    out.push_back(std::move(s));
  }
  for (auto& [id, s] : waiting_) out.push_back(std::move(s));
  running_.clear();
  waiting_.clear();
  inflight_.clear();
  drops_.clear();
  return out;
}

void Scheduler::Adopt(std::vector<Sequence> sequences) {
  for (auto it = sequences.rbegin(); it != sequences.rend(); ++it) {
    waiting_.emplace_front(next_seq_++, std::move(*it));
  }
}

void Scheduler::SetMaxSequences(int64_t n) {
  options_.max_sequences = std::max<int64_t>(1, n);
  while (running() > options_.max_sequences) {
    auto last = std::prev(running_.end());  // the latest admitted waits first
    waiting_.emplace_front(last->first, std::move(last->second));
    running_.erase(last);
  }
}

}  // namespace strata
