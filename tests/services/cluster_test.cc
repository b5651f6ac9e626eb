// The cluster end to end: `strata up` starts a coordinator, workers and a
// gateway as real processes on loopback; tests talk to them over gRPC and
// compare with the single-process generator.
#include <grpcpp/generic/generic_stub.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/backend/backend.h"
#include "runtime/chat_template.h"
#include "runtime/config.h"
#include "runtime/tokenizer.h"
#include "services/common/server.h"
#include "tests/proto/health.grpc.pb.h"
#include "tests/proto/reflection.pb.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"

namespace strata::testing {
namespace {

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour"};

struct PipelineCase {
  const char* flavour;
  int workers;
};

void PrintTo(const PipelineCase& c, std::ostream* os) {
  *os << c.flavour << " on " << c.workers << " worker(s)";
}

class PipelineTest : public ::testing::TestWithParam<PipelineCase> {};

// Greedy completions through N workers equal the single-process ones, token
// for token (CPU ships f32 hidden states, so splits are bit-identical).
TEST_P(PipelineTest, GreedyMatchesSingleProcess) {
  const std::string& model = TestModel(GetParam().flavour);
  auto cluster = Cluster::Start(model, GetParam().workers);
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  for (const char* prompt : kPrompts) {
    const Reference ref = GenerateLocally(model, prompt, 40);
    const StreamResult got = Stream(*stub, TextRequest(prompt, 40));
    ASSERT_EQ(got.code, 0) << got.message;
    EXPECT_EQ(got.tokens, ref.tokens) << prompt;
    EXPECT_EQ(got.text, ref.text) << prompt;
    EXPECT_EQ(got.finished.prompt_tokens(), ref.prompt.size());
    EXPECT_EQ(got.finished.completion_tokens(), ref.tokens.size());
    EXPECT_NE(got.finished.reason(), v1::FINISH_REASON_UNSPECIFIED);
  }
  // The layer map covers the model with one stage per worker.
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
  ASSERT_EQ(info.layer_map().stages_size(), GetParam().workers);
  EXPECT_EQ(info.layer_map().epoch(), 1u);
  EXPECT_EQ(info.layer_map().stages(0).layer_begin(), 0);
  EXPECT_EQ(info.layer_map().stages(GetParam().workers - 1).layer_end(), info.num_layers());
  EXPECT_TRUE(cluster->WaitKvFree(5000));
  EXPECT_EQ(cluster->Stop(), 0) << ReadFile(cluster->log_path());
}

// A GPTQ-Int4 checkpoint (act order, as Qwen publishes them) served by two
// workers, each loading its layers' packed weights: the same tokens as the
// single-process run of the same checkpoint, which the reference test holds
// to PyTorch on the dequantized weights.
TEST(QuantizedClusterTest, TwoWorkersServeAGptqInt4CheckpointLikeGenerate) {
  ModelSpec spec;
  spec.flavour = "qwen2";
  spec.quant.method = "gptq-int4";
  spec.quant.group_size = 32;
  spec.quant.desc_act = true;
  const std::string model = FreshDir("gptq-int4");
  ASSERT_TRUE(MakeModel(spec, model).ok());
  auto cluster = Cluster::Start(model, 2);
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  for (const char* prompt : kPrompts) {
    const Reference ref = GenerateLocally(model, prompt, 24);
    const StreamResult got = Stream(*stub, TextRequest(prompt, 24));
    ASSERT_EQ(got.code, 0) << got.message;
    EXPECT_EQ(got.tokens, ref.tokens) << prompt;
    EXPECT_EQ(got.text, ref.text) << prompt;
  }
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.layer_map().stages_size(), 2);
  EXPECT_EQ(cluster->Stop(), 0) << ReadFile(cluster->log_path());
}

INSTANTIATE_TEST_SUITE_P(Workers, PipelineTest,
                         ::testing::Values(PipelineCase{"llama", 1}, PipelineCase{"llama", 2},
                                           PipelineCase{"llama", 3}, PipelineCase{"llama", 4},
                                           PipelineCase{"qwen2", 2}, PipelineCase{"mistral", 3},
                                           PipelineCase{"hunyuan-dense", 4}),
                         [](const auto& info) {
                           std::string name =
                               absl::StrCat(info.param.flavour, "_", info.param.workers, "workers");
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

// A `messages` request is rendered with the model's own chat template and
// tokenized with its own tokenizer format (SentencePiece + Llama 2 for llama,
// tokenizer.json + ChatML for qwen2, tiktoken + Hunyuan for hunyuan-dense):
// the same ids as rendering and encoding here, and the same completion as
// sending those ids.
TEST(ClusterTest, ChatMessagesUseTheModelsTemplateAndTokenizer) {
  for (const char* flavour : {"llama", "qwen2", "hunyuan-dense"}) {
    const std::string& model = TestModel(flavour);
    auto cluster = Cluster::Start(model, 2);
    ASSERT_NE(cluster, nullptr);
    auto stub = cluster->generation();
    v1::GenerateRequest chat = TextRequest("", 12);
    for (const auto& [role, content] : std::vector<std::pair<std::string, std::string>>{
             {"system", "You are the lighthouse keeper."},
             {"user", "What did you see at sea?"},
             {"assistant", "A ship, 中文 and 😀."},
             {"user", "And then?"}}) {
      v1::ChatMessage* m = chat.mutable_messages()->add_messages();
      m->set_role(role);
      m->set_content(content);
    }
    auto tmpl = ChatTemplate::FromModelDir(model);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    std::vector<ChatMessage> messages;
    for (const auto& m : chat.messages().messages()) messages.push_back({m.role(), m.content()});
    auto text = tmpl->Render(messages, true);
    ASSERT_TRUE(text.ok()) << text.status();
    auto tokenizer = LoadTokenizer(model);
    ASSERT_TRUE(tokenizer.ok());
    auto ids = (*tokenizer)->Encode(*text, false);
    ASSERT_TRUE(ids.ok());
    v1::GenerateRequest by_ids = TextRequest("", 12);
    by_ids.mutable_prompt_tokens()->mutable_ids()->Add(ids->begin(), ids->end());

    const StreamResult got = Stream(*stub, chat);
    ASSERT_EQ(got.code, 0) << flavour << ": " << got.message;
    const StreamResult want = Stream(*stub, by_ids);
    ASSERT_EQ(want.code, 0) << want.message;
    EXPECT_EQ(got.finished.prompt_tokens(), ids->size()) << flavour;
    EXPECT_EQ(got.tokens, want.tokens) << flavour;
    // The template's control tokens arrived as single ids.
    int controls = 0;
    for (int32_t id : *ids) controls += (*tokenizer)->TokenBytes(id).empty();
    EXPECT_GE(controls, 3) << flavour << ": " << *text;

    // A role the template refuses (its raise_exception) is FAILED_PRECONDITION
    // with the template's message; ChatML's template takes any role.
    v1::GenerateRequest bad = chat;
    bad.mutable_messages()->mutable_messages(1)->set_role("wizard");
    const StreamResult refused = Stream(*stub, bad);
    if (std::string(flavour) == "qwen2") {
      EXPECT_EQ(refused.code, 0) << refused.message;
    } else {
      EXPECT_EQ(refused.code, grpc::StatusCode::FAILED_PRECONDITION) << flavour;
      EXPECT_NE(refused.message.find("roles"), std::string::npos) << refused.message;
    }
    EXPECT_EQ(cluster->Stop(), 0);
  }
  // A model without a chat template refuses messages and still serves prompts.
  auto cluster = Cluster::Start(TestModel("mistral"), 1);
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  v1::GenerateRequest chat = TextRequest("", 4);
  chat.mutable_messages()->add_messages()->set_content("hi");
  const StreamResult refused = Stream(*stub, chat);
  EXPECT_EQ(refused.code, grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.message.find("messages: this model has no usable chat template"),
            std::string::npos)
      << refused.message;
  EXPECT_EQ(Stream(*stub, TextRequest("hi", 4)).code, 0);
}

// The published shapes (Qwen2.5-3B-Instruct's, HY-MT1.5-1.8B's; two of their
// layers, random bf16) serve a chat through two workers with their own
// tokenizer formats and templates, token for token as the single process.
TEST(ClusterTest, PublishedShapesServeChatThroughTwoWorkers) {
  for (const auto& [flavour, size] : std::vector<std::pair<std::string, std::string>>{
           {"qwen2", "qwen2.5-3b"}, {"hunyuan-dense", "hy-mt1.5-1.8b"}}) {
    const std::string model = FreshDir(size);
    ModelSpec spec;
    spec.flavour = flavour;
    spec.size = size;
    spec.layers = 2;
    ASSERT_TRUE(MakeModel(spec, model).ok());
    auto cluster = Cluster::Start(model, 2);
    ASSERT_NE(cluster, nullptr);
    v1::GenerateRequest chat = TextRequest("", 6);
    for (const auto& [role, content] : std::vector<std::pair<std::string, std::string>>{
             {"system", "Translate into French."}, {"user", "The lighthouse is dark tonight."}}) {
      v1::ChatMessage* m = chat.mutable_messages()->add_messages();
      m->set_role(role);
      m->set_content(content);
    }
    const StreamResult got = Stream(*cluster->generation(), chat);
    ASSERT_EQ(got.code, 0) << size << ": " << got.message;
    auto text = ChatTemplate::FromModelDir(model)->Render(
        {{"system", "Translate into French."}, {"user", "The lighthouse is dark tonight."}}, true);
    ASSERT_TRUE(text.ok());
    const Reference ref = GenerateLocally(model, *text, 6);
    EXPECT_EQ(got.finished.prompt_tokens(), ref.prompt.size()) << size;
    EXPECT_EQ(got.tokens, ref.tokens) << size;
    EXPECT_EQ(cluster->Stop(), 0);
  }
}

// 16 streams at once, each with its own sampling and length, through a
// 3-stage pipeline with several micro-batches in flight: each equals its own
// single-process run with the same seed.
// A slow disk (the workers read their weights at 150 KB/s): each worker
// logs its read, the heartbeats carry it to the coordinator, and `strata up`
// shows it from GetClusterInfo before the cluster serves.
TEST(ClusterTest, ASlowLoadReportsItsProgress) {
  auto cluster = Cluster::Start(testing::TestModel("llama"), 2,
                                {"--worker-flags", "--debug-load-rate 150000"});
  ASSERT_NE(cluster, nullptr);
  const std::string up = testing::ReadFile(cluster->log_path());
  EXPECT_NE(up.find("strata up: reading weights: worker-"), std::string::npos) << up;
  EXPECT_NE(up.find("MB/s (ETA"), std::string::npos) << up;
  const std::string logs = cluster->log_dir();
  const std::string worker = testing::ReadFile(logs + "/worker-0.log");
  EXPECT_NE(worker.find("reading weights: "), std::string::npos) << worker;
  EXPECT_NE(worker.find(", done"), std::string::npos) << worker;
  // Loaded: no load in progress any more (at once: the coordinator knows
  // the loads ended), and the cluster serves.
  auto stub = cluster->coordinator_stub();
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    v1::ClusterInfo info;
    ASSERT_TRUE(stub->GetClusterInfo(&ctx, {}, &info).ok());
    EXPECT_TRUE(info.serving());
    for (const v1::WorkerHealth& w : info.model().workers()) {
      EXPECT_EQ(w.load_total_bytes(), 0) << w.worker_id();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const StreamResult ok = Stream(*cluster->generation(), TextRequest("hello", 4));
  EXPECT_EQ(ok.code, 0) << ok.message;
}

// `strata up --gpus sim:...`: one worker per simulated GPU, each stage on
// its own simulated A100; the stream is what one simulated GPU generates in
// one process (the simulated tokens do not depend on the split).
TEST(ClusterTest, SimulatedGpusServeWhatOneSimulatedGpuGenerates) {
  const std::string model = testing::TestModel("llama");
  auto cluster = Cluster::Start(model, 3, {"--gpus", "sim:a100-40gb*3"});
  ASSERT_NE(cluster, nullptr);
  const StreamResult got = Stream(*cluster->generation(), TextRequest("hello", 12, {}, true));
  ASSERT_EQ(got.code, 0) << got.message;
  ASSERT_EQ(got.tokens.size(), 12u);
  ASSERT_FALSE(got.text.empty());
  std::string local;
  ASSERT_EQ(testing::RunCommand(std::string(STRATA_BINARY) + " generate --model " + model +
                                    " --device sim:a100-40gb --max-tokens 12 --ignore-eos "
                                    "--prompt hello 2>&1",
                                &local),
            0)
      << local;
  EXPECT_NE(local.find("hello" + got.text), std::string::npos) << local << " vs " << got.text;
  const std::string logs = cluster->log_dir();
  for (int i = 0; i < 3; ++i) {
    const std::string log = testing::ReadFile(absl::StrCat(logs, "/worker-", i, ".log"));
    EXPECT_NE(log.find("device sim:a100-40gb (A100-40GB, simulated)"), std::string::npos) << log;
  }
}

// Qwen2.5-3B's full shape on two simulated 4 GiB GPUs: a two-stage pipeline
// whose KV cache is what each GPU's memory budget (90%) leaves after the
// weights, workspaces and scratch; admission follows the smaller cache; and
// a fixed budget that cannot fit is halved until it does.
TEST(ClusterTest, OnSmallGpusTheKvCacheIsWhatTheMemoryLeaves) {
  const std::string model = FreshDir("qwen3b-zeros");
  ModelSpec spec;
  spec.flavour = "qwen2";
  spec.size = "qwen2.5-3b";
  spec.init = "zeros";
  ASSERT_TRUE(MakeModel(spec, model).ok());
  auto cluster = Cluster::Start(
      model, 2,
      {"--gpus", "sim:custom*2", "--max-context", "4096", "--max-sequences", "64", "--worker-flags",
       "--sim-memory 4GiB --sim-bandwidth 300e9 --sim-flops 30e12"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo info = cluster->Info();
  ASSERT_EQ(info.layer_map().stages_size(), 2);
  int64_t smallest = INT64_MAX;
  for (const ClusterAddress& w : cluster->workers()) {
    grpc::ClientContext ctx;
    v1::WorkerStatus st;
    ASSERT_TRUE(cluster->worker_stub(w.address)->GetStatus(&ctx, {}, &st).ok());
    // 18 layers x 2 x 256 x 2 bytes x 16 tokens = 288 KiB a block; what is
    // left of 3.6 GiB after 3.2 GiB of weights holds a few hundred.
    EXPECT_GT(st.kv_blocks_total(), 256) << st.ShortDebugString();
    EXPECT_LT(st.kv_blocks_total(), 4096) << st.ShortDebugString();
    smallest = std::min(smallest, st.kv_blocks_total());
  }
  const std::string logs = cluster->log_dir();
  const std::string log = ReadFile(logs + "/coordinator.log");
  EXPECT_NE(log.find(absl::StrCat("KV budget now ", smallest / 256, " sequences (was 64)")),
            std::string::npos)
      << log;
  const StreamResult got = Stream(*cluster->generation(), TextRequest("hello", 8, {}, true));
  EXPECT_EQ(got.code, 0) << got.message;
  EXPECT_EQ(got.tokens.size(), 8u);
}

// HY-MT's full shape on two simulated 2.1 GiB GPUs fits only with the
// first stage's embedding table in host memory: the coordinator plans it so,
// the worker gathers the rows on the host, and the cluster serves what one
// simulated GPU generates.
TEST(ClusterTest, ATiedModelOnTwoSmallGpusKeepsItsEmbeddingOnTheHost) {
  const std::string model = FreshDir("hymt-zeros");
  ModelSpec spec;
  spec.flavour = "hunyuan-dense";
  spec.size = "hy-mt1.5-1.8b";
  spec.init = "zeros";
  ASSERT_TRUE(MakeModel(spec, model).ok());
  auto cluster = Cluster::Start(
      model, 2,
      {"--gpus", "sim:custom*2", "--max-context", "1024", "--max-sequences", "2", "--worker-flags",
       "--sim-memory 2.1GiB --sim-bandwidth 300e9 --sim-flops 30e12"});
  ASSERT_NE(cluster, nullptr);
  const v1::ModelInfo info = cluster->Info();
  ASSERT_EQ(info.layer_map().stages_size(), 2);
  EXPECT_NE(info.layer_map().stages(0).reason().find("embedding table in host memory"),
            std::string::npos)
      << info.layer_map().ShortDebugString();
  const StreamResult got = Stream(*cluster->generation(), TextRequest("hello", 8, {}, true));
  ASSERT_EQ(got.code, 0) << got.message;
  std::string local;
  ASSERT_EQ(testing::RunCommand(std::string(STRATA_BINARY) + " generate --model " + model +
                                    " --device sim:a100-40gb --max-tokens 8 --ignore-eos "
                                    "--prompt hello 2>&1",
                                &local),
            0)
      << local;
  EXPECT_NE(local.find("hello" + got.text), std::string::npos) << local << " vs " << got.text;
}

TEST(ClusterTest, SixteenConcurrentStreamsMatchTheirSingleProcessRuns) {
  const std::string& model = TestModel("llama");
  auto cluster = Cluster::Start(model, 3, {"--max-sequences", "16"});
  ASSERT_NE(cluster, nullptr);
  struct Case {
    std::string prompt;
    int max_tokens;
    SamplingParams sampling;
    bool ignore_eos;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 16; ++i) {
    SamplingParams s;
    s.temperature = i % 4 == 0 ? 0.0f : 0.5f + 0.1f * i;
    s.top_k = i % 3 == 0 ? 0 : 5 + i;
    s.top_p = i % 2 == 0 ? 1.0f : 0.9f;
    s.repetition_penalty = i % 5 == 0 ? 1.3f : 1.0f;
    s.seed = 1000 + i;
    cases.push_back({kPrompts[i % 3], 8 + 3 * i, s, i % 2 == 1});
  }
  std::vector<StreamResult> got(cases.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] {
      auto stub = cluster->generation();
      got[i] = Stream(*stub, TextRequest(cases[i].prompt, cases[i].max_tokens, cases[i].sampling,
                                         cases[i].ignore_eos));
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Reference ref = GenerateLocally(model, cases[i].prompt, cases[i].max_tokens,
                                          cases[i].sampling, cases[i].ignore_eos);
    ASSERT_EQ(got[i].code, 0) << "stream " << i << ": " << got[i].message;
    EXPECT_EQ(got[i].tokens, ref.tokens) << "stream " << i;
    EXPECT_EQ(got[i].text, ref.text) << "stream " << i;
  }
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

// n = 4 samples over gRPC: every response names its choice, each choice
// ends with one Finished and is the single-process run with seed + index;
// the map's epoch comes back; penalties apply per choice.
TEST(ClusterTest, NSamplesAreTheRunsWithConsecutiveSeeds) {
  const std::string& model = TestModel("llama");
  auto cluster = Cluster::Start(model, 2);
  ASSERT_NE(cluster, nullptr);
  SamplingParams s;
  s.temperature = 0.8f;
  s.top_k = 20;
  s.seed = 500;
  s.presence_penalty = 0.7f;
  s.frequency_penalty = 0.4f;
  v1::GenerateRequest request = TextRequest(kPrompts[1], 14, s, true);
  request.set_n(4);
  auto stub = cluster->generation();
  const StreamResult got = Stream(*stub, request);
  ASSERT_EQ(got.code, 0) << got.message;
  ASSERT_EQ(got.choices.size(), 4u);
  std::set<std::vector<int32_t>> distinct;
  for (uint32_t j = 0; j < 4; ++j) {
    SamplingParams sj = s;
    sj.seed = 500 + j;
    const Reference ref = GenerateLocally(model, kPrompts[1], 14, sj, true);
    const StreamResult::Choice& c = got.choices.at(j);
    EXPECT_EQ(c.tokens, ref.tokens) << "choice " << j;
    EXPECT_EQ(c.text, ref.text) << "choice " << j;
    ASSERT_EQ(c.finished.size(), 1u) << "choice " << j;
    EXPECT_EQ(c.finished[0].seed(), 500 + j);
    EXPECT_EQ(c.finished[0].completion_tokens(), 14u);
    EXPECT_GE(c.finished[0].map_epoch(), 1u);
    distinct.insert(c.tokens);
  }
  EXPECT_GT(distinct.size(), 1u) << "four samples at temperature 0.8 all alike";
  // n out of range names the field.
  request.set_n(65);
  const StreamResult refused = Stream(*stub, request);
  EXPECT_EQ(refused.code, grpc::INVALID_ARGUMENT);
  EXPECT_NE(refused.message.find("n:"), std::string::npos) << refused.message;
  request.set_n(0);
  EXPECT_EQ(Stream(*stub, request).code, grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

// A stop sequence that spans deltas ends the stream before it, with the text
// up to it, and frees the sequence everywhere.
TEST(ClusterTest, StopSequenceEndsTheStreamBeforeIt) {
  const std::string& model = TestModel("llama");
  auto cluster = Cluster::Start(model, 2);
  ASSERT_NE(cluster, nullptr);
  const Reference ref = GenerateLocally(model, kPrompts[0], 48, {}, true);
  ASSERT_GT(ref.text.size(), 12u);
  // Stop on a 4-byte stretch from the middle of the text.
  const std::string stop = ref.text.substr(ref.text.size() / 2, 4);
  const size_t at = ref.text.find(stop);
  auto request = TextRequest(kPrompts[0], 48, {}, true);
  request.add_stop("a stop that never appears");
  request.add_stop(stop);
  auto stub = cluster->generation();
  const StreamResult got = Stream(*stub, request);
  ASSERT_EQ(got.code, 0) << got.message;
  EXPECT_EQ(got.finished.reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(got.finished.stop_sequence(), stop);
  EXPECT_EQ(got.text, ref.text.substr(0, at));
  EXPECT_LT(got.tokens.size(), ref.tokens.size());
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

TEST(ClusterTest, MalformedRequestsNameTheField) {
  auto cluster = Cluster::Start(TestModel("llama"), 2, {"--max-context", "64"});
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  struct Bad {
    v1::GenerateRequest request;
    grpc::StatusCode code;
    std::string field;
  };
  std::vector<Bad> bad;
  bad.push_back({v1::GenerateRequest(), grpc::INVALID_ARGUMENT, "prompt"});
  auto r = TextRequest("hello", 8);
  r.set_max_tokens(0);
  bad.push_back({r, grpc::INVALID_ARGUMENT, "max_tokens"});
  r = TextRequest("hello", 8);
  r.mutable_sampling()->set_top_p(0);
  bad.push_back({r, grpc::INVALID_ARGUMENT, "top_p"});
  r = TextRequest("hello", 8);
  r.mutable_sampling()->set_temperature(-1);
  bad.push_back({r, grpc::INVALID_ARGUMENT, "temperature"});
  r = TextRequest("hello", 8);
  r.mutable_sampling()->set_repetition_penalty(0);
  bad.push_back({r, grpc::INVALID_ARGUMENT, "repetition_penalty"});
  r = TextRequest("hello", 8);
  for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("s", i));
  bad.push_back({r, grpc::INVALID_ARGUMENT, "stop"});
  r = TextRequest("hello", 8);
  r.add_stop("");
  bad.push_back({r, grpc::INVALID_ARGUMENT, "stop[0]"});
  r = v1::GenerateRequest();
  r.mutable_prompt_tokens()->add_ids(1);
  r.mutable_prompt_tokens()->add_ids(1 << 20);
  bad.push_back({r, grpc::INVALID_ARGUMENT, "prompt_tokens.ids[1]"});
  r = v1::GenerateRequest();
  r.mutable_prompt_tokens();
  bad.push_back({r, grpc::INVALID_ARGUMENT, "prompt"});
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "lighthouse keeper ";
  bad.push_back({TextRequest(long_prompt, 8), grpc::OUT_OF_RANGE, "prompt"});
  for (const Bad& b : bad) {
    const StreamResult got = Stream(*stub, b.request);
    EXPECT_EQ(got.code, b.code) << b.request.ShortDebugString() << ": " << got.message;
    EXPECT_NE(got.message.find(b.field), std::string::npos) << got.message;
    EXPECT_EQ(got.deltas, 0);
  }
  // The cluster still serves after all of that.
  const StreamResult ok = Stream(*stub, TextRequest("hello", 4));
  EXPECT_EQ(ok.code, 0) << ok.message;
  EXPECT_EQ(ok.tokens.size(), ok.finished.completion_tokens());
}

// A cluster whose workers take 20 ms a step, so streams are long enough to
// cancel, time out and queue up against.
class SlowClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = Cluster::Start(TestModel("llama"), 2,
                              {"--max-pending", "2", "--worker-flags", "--debug-step-delay-ms 20"})
                   .release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    ASSERT_TRUE(cluster_->WaitKvFree(5000));
  }
  static Cluster* cluster_;
};
Cluster* SlowClusterTest::cluster_ = nullptr;

TEST_F(SlowClusterTest, CancelMidStreamFreesKvOnEveryWorker) {
  auto stub = cluster_->generation();
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, TextRequest(kPrompts[0], 200, {}, true));
  v1::GenerateResponse response;
  int deltas = 0;
  while (deltas < 3 && reader->Read(&response)) deltas += response.has_delta() ? 1 : 0;
  ASSERT_EQ(deltas, 3);
  // Mid-stream, every worker holds the sequence.
  for (const auto& seqs : cluster_->WorkerSequences()) EXPECT_EQ(seqs.size(), 1u);
  ctx.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(cluster_->WaitKvFree(2000));
}

TEST_F(SlowClusterTest, DeadlineExceededFreesKv) {
  auto stub = cluster_->generation();
  // 200 tokens take over 4 s (20 ms a step); the deadline comes well before.
  const StreamResult got = Stream(*stub, TextRequest(kPrompts[1], 200, {}, true), 1500);
  EXPECT_EQ(got.code, grpc::StatusCode::DEADLINE_EXCEEDED) << got.message;
  EXPECT_GT(got.tokens.size(), 0u);
  EXPECT_LT(got.tokens.size(), 200u);
  EXPECT_TRUE(cluster_->WaitKvFree(2000));
}

TEST_F(SlowClusterTest, FullQueueIsResourceExhausted) {
  auto stub = cluster_->generation();
  // Two long streams fill the gateway's queue (--max-pending 2).
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < 2; ++i) {
    // A request of the previous test may still hold a place for a moment.
    bool started = false;
    for (int attempt = 0; attempt < 50 && !started; ++attempt) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      readers.push_back(
          stub->Generate(contexts.back().get(), TextRequest(kPrompts[i], 200, {}, true)));
      v1::GenerateResponse first;
      started = readers.back()->Read(&first);
      if (!started) {
        const grpc::Status st = readers.back()->Finish();
        ASSERT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
        readers.pop_back();
        contexts.pop_back();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    ASSERT_TRUE(started) << "stream " << i << " never got a place";
  }
  const StreamResult third = Stream(*stub, TextRequest(kPrompts[2], 4));
  EXPECT_EQ(third.code, grpc::StatusCode::RESOURCE_EXHAUSTED) << third.message;
  EXPECT_NE(third.message.find("queue full"), std::string::npos) << third.message;
  for (size_t i = 0; i < readers.size(); ++i) {
    contexts[i]->TryCancel();
    readers[i]->Finish();
  }
  EXPECT_TRUE(cluster_->WaitKvFree(2000));
  // With the queue empty again, requests are admitted.
  EXPECT_EQ(Stream(*stub, TextRequest(kPrompts[2], 2)).code, 0);
}

TEST_F(SlowClusterTest, ServersReportHealth) {
  for (const std::string& address :
       {cluster_->gateway(), cluster_->coordinator(), cluster_->workers()[0].address}) {
    // Internal servers take mutual TLS only; the gateway's public port is
    // plaintext here.
    auto health = grpc::health::v1::Health::NewStub(
        Dial(address, address == cluster_->gateway() ? nullptr : cluster_->security()));
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << address;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << address;
    grpc::ClientContext live_ctx;
    req.set_service(kLivenessService);
    ASSERT_TRUE(health->Check(&live_ctx, req, &resp).ok()) << address;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << address;
  }
}

// Lists a server's services over gRPC reflection, through a generic call.
std::vector<std::string> ListServices(const std::string& address,
                                      const TransportSecurity* security) {
  grpc::GenericStub stub(Dial(address, security));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto next = [&](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  std::vector<std::string> names;
  call->StartCall(reinterpret_cast<void*>(1));
  if (!next(1)) return names;
  strata::testing::ReflectionRequest req;
  req.set_list_services("");
  const std::string bytes = req.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  if (!next(2)) return names;
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  if (!next(3)) return names;
  std::vector<grpc::Slice> slices;
  (void)in.Dump(&slices);
  std::string data;
  for (const grpc::Slice& s : slices)
    data.append(reinterpret_cast<const char*>(s.begin()), s.size());
  strata::testing::ReflectionResponse resp;
  if (!resp.ParseFromString(data)) return names;
  for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  call->WritesDone(reinterpret_cast<void*>(4));
  next(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  return names;
}

// Every server answers reflection: tools like grpcurl can list and call it.
TEST_F(SlowClusterTest, ServersOfferReflection) {
  const std::vector<std::pair<std::string, std::string>> expect = {
      {cluster_->gateway(), "strata.v1.Generation"},
      {cluster_->coordinator(), "strata.v1.Coordinator"},
      {cluster_->workers()[1].address, "strata.v1.Worker"}};
  for (const auto& [address, service] : expect) {
    const std::vector<std::string> names =
        ListServices(address, address == cluster_->gateway() ? nullptr : cluster_->security());
    EXPECT_NE(std::find(names.begin(), names.end(), service), names.end()) << address;
    EXPECT_NE(std::find(names.begin(), names.end(), "grpc.health.v1.Health"), names.end())
        << address;
  }
}

// The coordinator gives up, naming what is missing, when a worker never
// registers; real processes, no `strata up`.
TEST(ClusterTest, WorkerThatNeverRegistersIsAStartupTimeout) {
  const std::string dir = FreshDir("startup-timeout");
  const std::string addr_file = dir + "/coordinator.addr";
  std::string coordinator_out;
  std::thread coordinator([&] {
    const int rc = RunCommand(
        absl::StrCat(STRATA_BINARY, " coordinator --model ", TestModel("llama"),
                     " --workers 2 --address-file ", addr_file, " --startup-timeout-ms 2000"),
        &coordinator_out);
    EXPECT_EQ(rc, 1);
  });
  std::string address;
  for (int i = 0; i < 500 && address.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    address = ReadFile(addr_file);
  }
  ASSERT_FALSE(address.empty());
  address = address.substr(0, address.find(' '));  // "grpc-address metrics-address\n"
  std::string worker_out;
  std::thread worker([&] {
    RunCommand(absl::StrCat(STRATA_BINARY,
                            " worker --id lonely --reconnect-timeout-ms 300"
                            " --coordinator ",
                            address),
               &worker_out);
  });
  coordinator.join();
  worker.join();  // the worker stops when its coordinator goes away
  EXPECT_NE(coordinator_out.find("1 of 2 workers registered"), std::string::npos)
      << coordinator_out;
  EXPECT_NE(coordinator_out.find("lonely"), std::string::npos) << coordinator_out;
  EXPECT_NE(worker_out.find("went away"), std::string::npos) << worker_out;
}

// A worker asked for a device it cannot use stops at once, naming it, before
// it registers; so does one given a device string that is not one.
TEST(ClusterTest, WorkerOnAnUnusableDeviceSaysSoAtStart) {
  std::string why;
  const bool have_gpu = CudaDeviceCount(&why) > 0;
  for (const std::string device : {"tpu0", "cuda:x", "cuda:0"}) {
    if (device == "cuda:0" && have_gpu) continue;
    std::string out;
    const int rc = RunCommand(absl::StrCat(STRATA_BINARY, " worker --coordinator 127.0.0.1:1",
                                           " --reconnect-timeout-ms 300 --device ", device),
                              &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(out.find("\"" + device + "\""), std::string::npos) << out;
  }
}

// A Load that puts a CPU worker into an NCCL peer group fails with the
// "peer group: " prefix the coordinator reads as "plan again over gRPC", and
// the worker keeps serving Loads without one. A real worker process, ended
// with SIGTERM.
// The attach end of a coordinator and nothing else: it registers a worker,
// hands it a session token and keeps its stream open, so the test can send
// the worker Loads as its coordinator would.
class AttachOnlyCoordinator final : public v1::Coordinator::Service {
 public:
  static constexpr char kToken[] = "test-session-token";
  grpc::Status Attach(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override {
    v1::WorkerMessage msg;
    if (!stream->Read(&msg)) return grpc::Status::OK;
    v1::CoordinatorMessage reply;
    reply.mutable_registered()->set_heartbeat_ms(200);
    reply.mutable_registered()->set_session_token(kToken);
    stream->Write(reply);
    registered_ = true;
    while (stream->Read(&msg)) {
    }
    return grpc::Status::OK;
  }
  std::atomic<bool> registered_{false};
};

TEST(ClusterTest, CpuWorkerRefusesAPeerGroupSoTheCoordinatorFallsBackToGrpc) {
  const std::string dir = FreshDir("peer-group");
  const std::string addr_file = dir + "/worker.addr";
  AttachOnlyCoordinator coordinator;
  auto server = Server::Start({&coordinator}, {});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string model = TestModel("llama");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(STRATA_BINARY, STRATA_BINARY, "worker", "--coordinator", (*server)->address().c_str(),
          "--reconnect-timeout-ms", "60000", "--connect-timeout-ms", "60000", "--address-file",
          addr_file.c_str(), "--metrics-listen", "", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string address;
  for (int i = 0; i < 1000 && address.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    address = ReadFile(addr_file);
  }
  address = address.substr(0, address.find(' '));
  for (int i = 0; i < 1000 && !coordinator.registered_; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto load = [&](bool with_group) {
    auto stub = v1::Worker::NewStub(Dial(address));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::LoadRequest req;
    req.set_epoch(with_group ? 1 : 2);
    req.set_model_dir(model);
    req.set_layer_begin(0);
    req.set_layer_end(LoadModelConfig(model)->num_layers);
    req.set_max_batch_tokens(64);
    req.set_max_context(128);
    req.set_max_sequences(2);
    req.set_session_token(AttachOnlyCoordinator::kToken);
    if (with_group) {
      req.set_peer_group_id(std::string(128, '\x01'));
      req.set_peer_rank(1);
      req.set_peer_group_size(2);
      req.set_recv_from_peer(true);
    }
    v1::LoadResponse resp;
    return stub->Load(&ctx, req, &resp);
  };
  if (!address.empty()) {
    const grpc::Status refused = load(true);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << refused.error_message();
    EXPECT_EQ(refused.error_message().rfind(kPeerGroupError, 0), 0u) << refused.error_message();
    EXPECT_NE(refused.error_message().find("no peer transport"), std::string::npos)
        << refused.error_message();
    const grpc::Status plain = load(false);
    EXPECT_TRUE(plain.ok()) << plain.error_message();
  }
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_FALSE(address.empty()) << "the worker wrote no address file";
}

// Two worker processes sharing one GPU, hidden states over gRPC, give the
// same tokens as one worker on it (bf16 -> f32 on the wire -> bf16 is exact).
TEST(ClusterTest, TwoWorkersSharingOneGpuMatchOneWorker) {
  std::string why;
  if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  const std::string& model = TestModel("llama", "bf16");
  const std::vector<std::string> flags = {"--worker-flags", "--device cuda:0 --capacity 4GiB"};
  std::vector<std::vector<int32_t>> want;
  {
    auto one = Cluster::Start(model, 1, flags);
    ASSERT_NE(one, nullptr);
    auto stub = one->generation();
    for (const char* prompt : kPrompts) {
      const StreamResult got = Stream(*stub, TextRequest(prompt, 32));
      ASSERT_EQ(got.code, 0) << got.message;
      want.push_back(got.tokens);
    }
    EXPECT_EQ(one->Stop(), 0) << ReadFile(one->log_path());
  }
  auto two = Cluster::Start(model, 2, flags);
  ASSERT_NE(two, nullptr);
  auto stub = two->generation();
  for (size_t i = 0; i < std::size(kPrompts); ++i) {
    const StreamResult got = Stream(*stub, TextRequest(kPrompts[i], 32));
    ASSERT_EQ(got.code, 0) << got.message;
    EXPECT_EQ(got.tokens, want[i]) << kPrompts[i];
  }
  EXPECT_EQ(two->Stop(), 0) << ReadFile(two->log_path());
}

// Ctrl-C on `strata up` drains and ends every process it started.
TEST(ClusterTest, InterruptStopsEveryProcess) {
  auto cluster = Cluster::Start(TestModel("llama"), 2);
  ASSERT_NE(cluster, nullptr);
  std::vector<pid_t> pids = {cluster->pid_of("gateway"), cluster->pid_of("coordinator")};
  for (const auto& w : cluster->workers()) pids.push_back(w.pid);
  for (pid_t p : pids) ASSERT_EQ(kill(p, 0), 0) << "pid " << p << " should be running";
  EXPECT_EQ(cluster->Stop(), 0) << ReadFile(cluster->log_path());
  for (pid_t p : pids) EXPECT_NE(kill(p, 0), 0) << "pid " << p << " outlived strata up";
}

TEST(ClusterTest, TokenizeAndModelInfo) {
  auto cluster = Cluster::Start(TestModel("llama"), 2);
  ASSERT_NE(cluster, nullptr);
  auto stub = cluster->generation();
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_text(kPrompts[0]);
  v1::TokenizeResponse resp;
  ASSERT_TRUE(stub->Tokenize(&ctx, req, &resp).ok());
  const Reference ref = GenerateLocally(TestModel("llama"), kPrompts[0], 1);
  EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()), ref.prompt);
  EXPECT_EQ(resp.pieces_size(), resp.token_ids_size());
  grpc::ClientContext ctx2;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx2, {}, &info).ok());
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.num_layers(), 4);
  EXPECT_EQ(info.layer_map().stages(0).layer_end(), info.layer_map().stages(1).layer_begin());
  EXPECT_FALSE(info.layer_map().stages(0).reason().empty());
  // The public answer names the model, not its folder, and no internal address.
  EXPECT_EQ(info.model().find('/'), std::string::npos) << info.model();
  for (const auto& st : info.layer_map().stages()) EXPECT_TRUE(st.address().empty());
  for (const auto& w : info.workers()) EXPECT_TRUE(w.address().empty()) << w.worker_id();
  EXPECT_EQ(info.workers_size(), 2);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// Users call Strata through stubs generated from proto/: the Python example
// streams the same completion as the single-process generator.
TEST(ClusterTest, PythonClientFromGeneratedStubs) {
  const std::string& model = TestModel("llama");
  auto cluster = Cluster::Start(model, 2);
  ASSERT_NE(cluster, nullptr);
  const Reference ref = GenerateLocally(model, kPrompts[2], 24);
  std::string out;
  const int rc = RunCommand(
      absl::StrCat("/usr/bin/python3 ", STRATA_SOURCE_DIR,
                   "/examples/python_client.py --json --address ", cluster->gateway(),
                   " --prompt '", kPrompts[2], "' --max-tokens 24 --stubs ", STRATA_PYTHON_STUBS),
      &out);
  ASSERT_EQ(rc, 0) << out;
  std::string ids;
  for (size_t i = 0; i < ref.tokens.size(); ++i)
    absl::StrAppend(&ids, i ? ", " : "", ref.tokens[i]);
  EXPECT_NE(out.find("\"token_ids\": [" + ids + "]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"completion_tokens\": " + std::to_string(ref.tokens.size())),
            std::string::npos)
      << out;
  // The messages form: the same tokens as sending the rendered prompt's ids.
  const std::string chat_cmd =
      absl::StrCat("/usr/bin/python3 ", STRATA_SOURCE_DIR, "/examples/python_client.py --json ",
                   "--address ", cluster->gateway(), " --prompt hi --system 'Be brief.' ",
                   "--max-tokens 6 --stubs ", STRATA_PYTHON_STUBS);
  ASSERT_EQ(RunCommand(chat_cmd, &out), 0) << out;
  auto text =
      ChatTemplate::FromModelDir(model)->Render({{"system", "Be brief."}, {"user", "hi"}}, true);
  ASSERT_TRUE(text.ok());
  v1::GenerateRequest by_ids = TextRequest("", 6);
  auto prompt_ids = (*LoadTokenizer(model))->Encode(*text, false);
  by_ids.mutable_prompt_tokens()->mutable_ids()->Add(prompt_ids->begin(), prompt_ids->end());
  const StreamResult want = Stream(*cluster->generation(), by_ids);
  ASSERT_EQ(want.code, 0) << want.message;
  ids.clear();
  for (size_t i = 0; i < want.tokens.size(); ++i)
    absl::StrAppend(&ids, i ? ", " : "", want.tokens[i]);
  EXPECT_NE(out.find("\"token_ids\": [" + ids + "]"), std::string::npos) << out;
}

}  // namespace
}  // namespace strata::testing
