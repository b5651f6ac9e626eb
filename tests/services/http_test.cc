// The OpenAI-compatible HTTP API against a live cluster (`strata up
// --http-listen`), spoken by a plain HTTP client: completions and chat,
// streamed and not, equal the single-process runs token for token; a seed
// reproduces a sampled run and an unseeded one returns the seed it used;
// hostile requests each get the right status naming the field; a client that
// disconnects mid-stream frees its KV on every worker.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"
#include "tools/sse_client.h"

namespace strata::testing {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;

constexpr char kKey[] = "sk-strata-http-test-0123456789";

struct Reply {
  int status = 0;
  std::string body;
  std::string retry_after;
};

// One request on a fresh connection.
Reply Call(const std::string& address, http::verb verb, const std::string& target,
           const std::string& body, const std::string& key = kKey,
           const std::string& content_type = "application/json") {
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  const size_t colon = address.rfind(':');
  stream.connect(resolver.resolve(address.substr(0, colon), address.substr(colon + 1)));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, address);
  req.set(http::field::content_type, content_type);
  if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
  req.body() = body;
  req.prepare_payload();
  // A server that refuses a large body (413) answers before reading all of
  // it and closes: the write may then fail, and the answer is still there.
  beast::error_code write_error;
  http::write(stream, req, write_error);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  beast::error_code ec;
  http::read(stream, buffer, parser, ec);
  Reply r;
  if (ec) return r;
  r.status = parser.get().result_int();
  r.body = parser.get().body();
  if (auto it = parser.get().find(http::field::retry_after); it != parser.get().end()) {
    r.retry_after = std::string(it->value());
  }
  return r;
}

Reply Post(const std::string& address, const std::string& target, const json& body,
           const std::string& key = kKey) {
  return Call(address, http::verb::post, target, body.dump(), key);
}

// The `data:` events of an SSE body, [DONE] excluded; `done` says it came.
std::vector<json> Events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    if (!absl::ConsumePrefix(&block, "data: ")) continue;
    if (block == "[DONE]") {
      *done = true;
      continue;
    }
    out.push_back(json::parse(block));
  }
  return out;
}

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = FreshDir("http");
    keys_ = new std::string(dir + "/keys");
    std::ofstream(*keys_) << kKey << "\n";
    cluster_ = Cluster::Start(TestModel("llama"), 2,
                              {"--http-listen", "127.0.0.1:0", "--api-key-file", *keys_,
                               "--max-context", "128"})
                   .release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (cluster_ == nullptr) GTEST_SKIP() << "the cluster did not start";
    const Reply models = Call(cluster_->http(), http::verb::get, "/v1/models", "");
    ASSERT_EQ(models.status, 200) << models.body;
    model_ = json::parse(models.body)["data"][0]["id"];
  }
  json Body(const json& extra) const {
    json b = extra;
    b["model"] = model_;
    return b;
  }
  static Cluster* cluster_;
  static std::string* keys_;
  std::string model_;
};
Cluster* HttpTest::cluster_ = nullptr;
std::string* HttpTest::keys_ = nullptr;

TEST_F(HttpTest, CompletionsEqualTheSingleProcessRunStreamedOrNot) {
  const std::string prompt = "The old lighthouse keeper";
  const Reference want = GenerateLocally(TestModel("llama"), prompt, 12, {}, true, 128);
  const json req = Body({{"prompt", prompt},
                         {"max_tokens", 12},
                         {"temperature", 0},
                         {"ignore_eos", true},
                         {"return_token_ids", true}});
  const Reply r = Post(cluster_->http(), "/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = json::parse(r.body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], model_);
  EXPECT_EQ(body["choices"][0]["text"], want.text);
  EXPECT_EQ(body["choices"][0]["token_ids"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(body["choices"][0]["prompt_token_ids"].get<std::vector<int32_t>>(), want.prompt);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], want.prompt.size());
  EXPECT_EQ(body["usage"]["completion_tokens"], 12);
  EXPECT_EQ(body["usage"]["total_tokens"], want.prompt.size() + 12);

  json streamed = req;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const Reply s = Post(cluster_->http(), "/v1/completions", streamed);
  ASSERT_EQ(s.status, 200) << s.body;
  bool done = false;
  const std::vector<json> events = Events(s.body, &done);
  EXPECT_TRUE(done);
  std::string text;
  std::vector<int32_t> ids;
  for (const json& e : events) {
    if (e["choices"].empty()) continue;
    text += e["choices"][0]["text"].get<std::string>();
    for (int32_t id : e["choices"][0]["token_ids"]) ids.push_back(id);
  }
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(ids, want.tokens);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 12);  // the usage chunk

  json echo = req;
  echo["echo"] = true;
  const Reply e = Post(cluster_->http(), "/v1/completions", echo);
  ASSERT_EQ(e.status, 200) << e.body;
  EXPECT_EQ(json::parse(e.body)["choices"][0]["text"], prompt + want.text);
}

TEST_F(HttpTest, ChatEqualsTheGrpcChatPathAndStreamsRoleThenContent) {
  v1::GenerateRequest grpc_req;
  grpc_req.set_max_tokens(8);
  v1::ChatMessage* m = grpc_req.mutable_messages()->add_messages();
  m->set_role("user");
  m->set_content("Tell me about the sea");
  grpc_req.set_ignore_eos(true);
  // The same conversation over gRPC (with the key, as the gateway requires).
  StreamResult want;
  {
    auto stub = cluster_->generation();
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kKey);
    auto reader = stub->Generate(&ctx, grpc_req);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_delta()) want.text += response.delta().text();
    }
    const grpc::Status st = reader->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  const json req = Body({{"messages", {{{"role", "user"}, {"content", "Tell me about the sea"}}}},
                         {"max_tokens", 8},
                         {"temperature", 0},
                         {"ignore_eos", true}});
  const Reply r = Post(cluster_->http(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = json::parse(r.body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], want.text);
  json streamed = req;
  streamed["stream"] = true;
  const Reply s = Post(cluster_->http(), "/v1/chat/completions", streamed);
  bool done = false;
  const std::vector<json> events = Events(s.body, &done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (const json& e : events) text += e["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(done);
}

// A seed reproduces a sampled run bit for bit; without one the server draws
// a seed and says which, and that seed reproduces it.
TEST_F(HttpTest, SeedsReproduceAndUnseededRunsReturnTheirSeed) {
  const std::string prompt = "Once upon a time";
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.seed = 1234;
  const Reference want = GenerateLocally(TestModel("llama"), prompt, 16, sp, true, 128);
  const json seeded = Body({{"prompt", prompt},
                            {"max_tokens", 16},
                            {"temperature", 0.9},
                            {"seed", 1234},
                            {"ignore_eos", true},
                            {"return_token_ids", true}});
  const Reply ra = Post(cluster_->http(), "/v1/completions", seeded);
  ASSERT_EQ(ra.status, 200) << ra.body;
  const json a = json::parse(ra.body);
  EXPECT_EQ(a["choices"][0]["token_ids"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(a["seed"], 1234u);
  json unseeded = seeded;
  unseeded.erase("seed");
  const Reply rb = Post(cluster_->http(), "/v1/completions", unseeded);
  const Reply rc = Post(cluster_->http(), "/v1/completions", unseeded);
  ASSERT_EQ(rb.status, 200) << rb.body;
  ASSERT_EQ(rc.status, 200) << rc.body;
  const json b = json::parse(rb.body), c = json::parse(rc.body);
  ASSERT_TRUE(b["seed"].is_number_unsigned());
  EXPECT_NE(b["seed"], c["seed"]) << "two unseeded runs drew the same seed";
  json again = seeded;
  again["seed"] = b["seed"];
  const Reply rd = Post(cluster_->http(), "/v1/completions", again);
  ASSERT_EQ(rd.status, 200) << rd.body << "\n" << again.dump();
  const json d = json::parse(rd.body);
  EXPECT_EQ(d["choices"][0]["token_ids"], b["choices"][0]["token_ids"]);
}

TEST_F(HttpTest, ModelsTokenizeDetokenizeHealthVersion) {
  const json models = json::parse(Call(cluster_->http(), http::verb::get, "/v1/models", "").body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["max_model_len"], 128);
  EXPECT_EQ(model_.find('/'), std::string::npos) << "a local folder is named by its name";
  EXPECT_EQ(Call(cluster_->http(), http::verb::get, "/v1/models/" + model_, "").status, 200);
  EXPECT_EQ(Call(cluster_->http(), http::verb::get, "/v1/models/nope", "").status, 404);
  const Reference want = GenerateLocally(TestModel("llama"), "Once upon a time", 1);
  const json tok =
      json::parse(Post(cluster_->http(), "/tokenize", {{"prompt", "Once upon a time"}}).body);
  EXPECT_EQ(tok["tokens"].get<std::vector<int32_t>>(), want.prompt);
  EXPECT_EQ(tok["count"], want.prompt.size());
  const json detok =
      json::parse(Post(cluster_->http(), "/detokenize", {{"tokens", tok["tokens"]}}).body);
  EXPECT_EQ(detok["prompt"], "Once upon a time");
  EXPECT_EQ(Call(cluster_->http(), http::verb::get, "/health", "", "").status, 200);
  const Reply v = Call(cluster_->http(), http::verb::get, "/version", "", "");
  EXPECT_EQ(v.status, 200);
  EXPECT_EQ(json::parse(v.body)["version"], "0.1.0");
}

// Thirty-odd hostile requests: each gets its status and names its field;
// afterwards the cluster serves on and no KV is held.
TEST_F(HttpTest, HostileRequestsGetTheRightStatusAndNameTheField) {
  const std::string h = cluster_->http();
  struct Case {
    std::string what;
    Reply reply;
    int status;
    std::string param;  // "" when the error has none
  };
  const json msgs = {{{"role", "user"}, {"content", "x"}}};
  std::vector<Case> cases = {
      {"no key", Post(h, "/v1/completions", Body({{"prompt", "x"}}), ""), 401, ""},
      {"wrong key", Post(h, "/v1/completions", Body({{"prompt", "x"}}), "sk-wrong-key-0000000000"),
       401, ""},
      {"bad json", Call(h, http::verb::post, "/v1/completions", "{\"model\": "), 400, "body"},
      {"not an object", Call(h, http::verb::post, "/v1/completions", "[]"), 400, "body"},
      {"invalid utf-8",
       Call(h, http::verb::post, "/v1/completions",
            "{\"model\": \"" + model_ + "\", \"prompt\": \"\xC3\x28\"}"),
       400, "body"},
      {"huge number",
       Call(h, http::verb::post, "/v1/completions",
            "{\"model\": \"" + model_ + "\", \"prompt\": \"x\", \"seed\": 1e999}"),
       400, "body"},
      {"unknown model", Post(h, "/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}}), 404,
       "model"},
      {"no prompt", Post(h, "/v1/completions", Body({})), 400, "prompt"},
      {"prompt type", Post(h, "/v1/completions", Body({{"prompt", true}})), 400, "prompt"},
      {"negative id", Post(h, "/v1/completions", Body({{"prompt", {1, -5}}})), 400, "prompt[1]"},
      {"id past vocab", Post(h, "/v1/completions", Body({{"prompt", {1, 100000}}})), 400,
       "prompt_tokens.ids[1]"},
      {"max_tokens 0", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"max_tokens", 0}})), 400,
       "max_tokens"},
      {"max_tokens -1", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"max_tokens", -1}})),
       400, "max_tokens"},
      {"max_tokens huge",
       Post(h, "/v1/completions", Body({{"prompt", "x"}, {"max_tokens", 1LL << 40}})), 400,
       "max_tokens"},
      {"temperature", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"temperature", 9}})), 400,
       "temperature"},
      {"top_p", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"top_p", -0.1}})), 400, "top_p"},
      {"min_p", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"min_p", 2}})), 400, "min_p"},
      {"huge n", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"n", 100000}})), 400, "n"},
      {"prompts x n",
       Post(h, "/v1/completions", Body({{"prompt", std::vector<std::string>(8, "x")}, {"n", 9}})),
       400, "n"},
      {"best_of above n", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"best_of", 2}})), 400,
       "best_of"},
      {"presence_penalty",
       Post(h, "/v1/completions", Body({{"prompt", "x"}, {"presence_penalty", -3}})), 400,
       "presence_penalty"},
      {"one prompt of a batch too long",
       Post(h, "/v1/completions",
            Body({{"prompt", {"x", std::string(20000, 'a')}}, {"n", 2}, {"max_tokens", 50}})),
       400, "prompt[1]"},
      {"logprobs", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"logprobs", 50}})), 400,
       "logprobs"},
      {"stop type",
       Post(h, "/v1/completions",
            Body({{"prompt", "x"}, {"stop", json::array({json::object({{"a", 1}})})}})),
       400, "stop[0]"},
      {"17 stops",
       Post(h, "/v1/completions",
            Body({{"prompt", "x"}, {"stop", std::vector<std::string>(17, "s")}})),
       400, "stop"},
      {"unknown field", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"frobnicate", 1}})), 400,
       "frobnicate"},
      {"suffix", Post(h, "/v1/completions", Body({{"prompt", "x"}, {"suffix", "y"}})), 400,
       "suffix"},
      {"prompt too long", Post(h, "/v1/completions", Body({{"prompt", std::string(20000, 'a')}})),
       400, "prompt"},
      {"body too large", Call(h, http::verb::post, "/v1/completions", std::string(80 << 20, ' ')),
       413, "body"},
      {"chat without messages", Post(h, "/v1/chat/completions", Body({{"prompt", "x"}})), 400,
       "prompt"},
      {"bad role",
       Post(h, "/v1/chat/completions", Body({{"messages", {{{"role", "x"}, {"content", "y"}}}}})),
       400, "messages[0].role"},
      {"tools",
       Post(h, "/v1/chat/completions",
            Body({{"messages", msgs}, {"tools", {{{"type", "function"}}}}})),
       400, "tools[0].function"},
      {"stream_options without stream",
       Post(h, "/v1/chat/completions",
            Body({{"messages", msgs}, {"stream_options", {{"include_usage", true}}}})),
       400, "stream_options"},
      {"unknown path", Post(h, "/v1/embeddings", Body({{"input", "x"}})), 404, ""},
      {"wrong method", Call(h, http::verb::get, "/v1/completions", ""), 405, ""},
      {"detokenize bad id", Post(h, "/detokenize", {{"tokens", {1, 99999}}}), 400, "tokens[1]"},
      {"tokenize nothing", Post(h, "/tokenize", json::object()), 400, "prompt"},
  };
  ASSERT_GE(cases.size(), 30u);
  for (const Case& c : cases) {
    EXPECT_EQ(c.reply.status, c.status) << c.what << ": " << c.reply.body;
    if (c.reply.body.empty()) continue;
    const json e = json::parse(c.reply.body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << c.what << ": " << c.reply.body;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty()) << c.what;
    if (!c.param.empty()) {
      EXPECT_EQ(e["error"]["param"], c.param) << c.what << ": " << c.reply.body;
      EXPECT_NE(e["error"]["message"].get<std::string>().find(c.param), std::string::npos)
          << c.what << ": " << c.reply.body;
    }
  }
  const Reply ok = Post(h, "/v1/completions", Body({{"prompt", "x"}, {"max_tokens", 3}}));
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(cluster_->WaitKvFree(5000));
}

// A client that closes its connection mid-stream cancels the request: every
// worker frees its KV.
TEST_F(HttpTest, ADisconnectMidStreamFreesKvOnEveryWorker) {
  for (int n : {1, 3}) {
    SCOPED_TRACE(absl::StrCat("n = ", n));
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    const std::string h = cluster_->http();
    const size_t colon = h.rfind(':');
    stream.connect(resolver.resolve(h.substr(0, colon), h.substr(colon + 1)));
    http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
    req.set(http::field::host, h);
    req.set(http::field::authorization, std::string("Bearer ") + kKey);
    req.body() = Body({{"prompt", "The old lighthouse keeper"},
                       {"max_tokens", 120},
                       {"ignore_eos", true},
                       {"n", n},
                       {"stream", true}})
                     .dump();
    req.prepare_payload();
    http::write(stream, req);
    // Read until the first event arrived, then hang up.
    std::string seen;
    char buf[4096];
    while (seen.find("data: ") == std::string::npos) {
      beast::error_code ec;
      const size_t got = stream.socket().read_some(net::buffer(buf), ec);
      ASSERT_FALSE(ec) << ec.message();
      seen.append(buf, got);
    }
    EXPECT_FALSE(cluster_->WorkerSequences()[0].empty() && cluster_->WorkerSequences()[1].empty());
    stream.socket().shutdown(tcp::socket::shutdown_both);
    stream.close();
    EXPECT_TRUE(cluster_->WaitKvFree(10'000));
  }
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// Reads an SSE response from an open connection until [DONE]; or, with
// `hang_up_after` events, closes the connection after that many.
struct SseRun {
  std::string text;
  std::vector<int32_t> ids;
  bool done = false;
  int status = 0;
};

SseRun StreamSse(const std::string& address, const json& body, int hang_up_after) {
  SseRun run;
  int events = 0;
  const SseReply reply =
      PostSse(address, "/v1/completions", body.dump(), kKey, [&](const json& e, auto) {
        if (e.contains("choices") && !e["choices"].empty()) {
          run.text += e["choices"][0]["text"].get<std::string>();
          for (int32_t id : e["choices"][0]["token_ids"]) run.ids.push_back(id);
        }
        return hang_up_after == 0 || ++events < hang_up_after;
      });
  run.status = reply.status;
  run.done = reply.done;
  return run;
}

// 300 concurrent SSE streams, a third of them hung up after a few events:
// every completed stream equals its single-process run, no KV is left on
// any worker, and the gateway's memory does not grow with the streams.
TEST(HttpLoadTest, ThreeHundredSseStreamsWithRandomDisconnects) {
  const std::string dir = FreshDir("http-load");
  std::ofstream(dir + "/keys") << kKey << "\n";
  auto cluster =
      Cluster::Start(TestModel("llama"), 2,
                     {"--http-listen", "127.0.0.1:0", "--api-key-file", dir + "/keys",
                      "--max-context", "128", "--max-pending", "1024", "--max-sequences", "64"});
  ASSERT_NE(cluster, nullptr);
  const char* const prompts[] = {"The old lighthouse keeper", "Once upon a time",
                                 "In the morning the harbour", "She opened the door"};
  std::vector<Reference> want;
  for (const char* p : prompts) {
    want.push_back(GenerateLocally(TestModel("llama"), p, 24, {}, true, 128));
  }
  const pid_t gateway = cluster->pid_of("gateway");
  auto warm = StreamSse(cluster->http(),
                        {{"model", "llama-f32-1"},
                         {"prompt", "x"},
                         {"max_tokens", 2},
                         {"stream", true},
                         {"return_token_ids", true}},
                        0);
  ASSERT_TRUE(warm.done);
  const int64_t rss_before = ResidentKiB(gateway);
  constexpr int kStreams = 300;
  std::vector<SseRun> runs(kStreams);
  std::vector<std::thread> clients;
  std::mt19937 rng(7);
  std::vector<int> hang_up(kStreams);
  for (int i = 0; i < kStreams; ++i) hang_up[i] = i % 3 == 0 ? 1 + rng() % 5 : 0;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      runs[i] = StreamSse(cluster->http(),
                          {{"model", "llama-f32-1"},
                           {"prompt", prompts[i % 4]},
                           {"max_tokens", 24},
                           {"temperature", 0},
                           {"ignore_eos", true},
                           {"stream", true},
                           {"return_token_ids", true}},
                          hang_up[i]);
    });
  }
  for (auto& t : clients) t.join();
  int completed = 0;
  for (int i = 0; i < kStreams; ++i) {
    if (hang_up[i] > 0) continue;
    ASSERT_EQ(runs[i].status, 200) << "stream " << i;
    ASSERT_TRUE(runs[i].done) << "stream " << i;
    EXPECT_EQ(runs[i].ids, want[i % 4].tokens) << "stream " << i;
    EXPECT_EQ(runs[i].text, want[i % 4].text) << "stream " << i;
    ++completed;
  }
  EXPECT_EQ(completed, kStreams - kStreams / 3);
  EXPECT_TRUE(cluster->WaitKvFree(20'000));
  // Bounded: the gateway holds nothing per finished stream.
  EXPECT_LT(ResidentKiB(gateway) - rss_before, 64 << 10);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// Log-probabilities through the cluster equal the log-softmax of the raw
// logits `strata logits` writes for the same tokens (1e-4 on CPU); the
// alternatives are sorted, hold the chosen token when it ranks within k, and
// their probabilities sum to at most 1. Chat carries them in its own shape.
TEST_F(HttpTest, LogprobsAreTheLogSoftmaxOfTheRawLogits) {
  constexpr int kTokens = 10, kTop = 5;
  const Reply r = Post(cluster_->http(), "/v1/completions",
                       Body({{"prompt", "The old lighthouse keeper"},
                             {"max_tokens", kTokens},
                             {"temperature", 0},
                             {"ignore_eos", true},
                             {"logprobs", kTop},
                             {"return_token_ids", true}}));
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = json::parse(r.body)["choices"][0];
  const std::vector<int32_t> prompt = choice["prompt_token_ids"];
  const std::vector<int32_t> tokens = choice["token_ids"];
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kTokens));
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), tokens.size()) << lp.dump();
  // The same run's logits from `strata logits`.
  const std::string dir = FreshDir("logprobs");
  std::string ids, out;
  for (size_t i = 0; i < prompt.size(); ++i) absl::StrAppend(&ids, i ? "," : "", prompt[i]);
  ASSERT_EQ(
      RunCommand(absl::StrCat(STRATA_BINARY, " logits --model ", TestModel("llama"), " --ids ", ids,
                              " --steps ", kTokens, " --out ", dir, "/logits.f32 2>/dev/null"),
                 &out),
      0)
      << out;
  const json meta = json::parse(out);
  EXPECT_EQ(meta["tokens"].get<std::vector<int32_t>>(), tokens);
  const int64_t vocab = meta["vocab_size"];
  const std::string raw = ReadFile(dir + "/logits.f32");
  ASSERT_GE(raw.size(), tokens.size() * vocab * sizeof(float));
  EXPECT_EQ(lp["text_offset"][0], 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* row = reinterpret_cast<const float*>(raw.data()) + i * vocab;
    double max = row[0], sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    const double lse = max + std::log(sum);
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), row[tokens[i]] - lse, 1e-4) << "token " << i;
    const json& top = lp["top_logprobs"][i];
    double mass = 0, previous = 1;
    // The legacy shape keys alternatives by text; compare values, sorted.
    std::vector<double> values;
    for (auto it = top.begin(); it != top.end(); ++it) values.push_back(it.value());
    std::sort(values.rbegin(), values.rend());
    std::vector<double> want;
    for (int64_t v = 0; v < vocab; ++v) want.push_back(row[v] - lse);
    std::sort(want.rbegin(), want.rend());
    ASSERT_GE(values.size(), 1u);
    for (size_t k = 0; k < values.size(); ++k) {
      EXPECT_LE(values[k], previous);
      previous = values[k];
      mass += std::exp(values[k]);
    }
    EXPECT_NEAR(values[0], want[0], 1e-4);  // greedy: the chosen token leads
    EXPECT_NEAR(values[0], lp["token_logprobs"][i].get<double>(), 1e-6);
    EXPECT_LE(mass, 1.0 + 1e-6);
    if (i > 0) {
      EXPECT_GE(lp["text_offset"][i], lp["text_offset"][i - 1]);
    }
  }

  // Chat: {"content": [{token, logprob, bytes, top_logprobs}]}, top sorted.
  const Reply c = Post(cluster_->http(), "/v1/chat/completions",
                       Body({{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                             {"max_tokens", 4},
                             {"temperature", 0.8},
                             {"seed", 3},
                             {"ignore_eos", true},
                             {"logprobs", true},
                             {"top_logprobs", 3}}));
  ASSERT_EQ(c.status, 200) << c.body;
  const json content = json::parse(c.body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  for (const json& e : content) {
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    EXPECT_GE(e["top_logprobs"][0]["logprob"].get<double>(),
              e["top_logprobs"][2]["logprob"].get<double>());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    // Sampled (not greedy): the chosen token is among the top 3 or below them.
    bool within = false;
    for (const json& alt : e["top_logprobs"]) within |= alt["bytes"] == e["bytes"];
    EXPECT_TRUE(within ||
                e["logprob"].get<double>() <= e["top_logprobs"][2]["logprob"].get<double>());
  }
  // Streamed chunks carry the logprobs of their own tokens.
  const Reply s = Post(cluster_->http(), "/v1/completions",
                       Body({{"prompt", "The old lighthouse keeper"},
                             {"max_tokens", kTokens},
                             {"temperature", 0},
                             {"ignore_eos", true},
                             {"logprobs", 1},
                             {"stream", true}}));
  bool done = false;
  std::vector<double> streamed;
  for (const json& e : Events(s.body, &done)) {
    if (e["choices"].empty() || e["choices"][0]["logprobs"].is_null()) continue;
    for (double v : e["choices"][0]["logprobs"]["token_logprobs"]) streamed.push_back(v);
  }
  ASSERT_EQ(streamed.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_NEAR(streamed[i], lp["token_logprobs"][i].get<double>(), 1e-6);
  }
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// stop_token_ids end a sequence as EOS does (the stop token is its last);
// min_tokens keeps EOS and the stop tokens from being sampled before then.
TEST_F(HttpTest, StopTokenIdsAndMinTokens) {
  const std::string prompt = "The old lighthouse keeper";
  const Reference free_run = GenerateLocally(TestModel("llama"), prompt, 12, {}, true, 128);
  // The first position whose token did not occur before it.
  size_t k = 3;
  while (k < free_run.tokens.size() &&
         std::find(free_run.tokens.begin(), free_run.tokens.begin() + k, free_run.tokens[k]) !=
             free_run.tokens.begin() + k) {
    ++k;
  }
  ASSERT_LT(k, free_run.tokens.size());
  const int32_t stop = free_run.tokens[k];
  const Reply r = Post(cluster_->http(), "/v1/completions",
                       Body({{"prompt", prompt},
                             {"max_tokens", 12},
                             {"temperature", 0},
                             {"stop_token_ids", {stop}},
                             {"return_token_ids", true}}));
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = json::parse(r.body)["choices"][0];
  const std::vector<int32_t> stopped = choice["token_ids"];
  EXPECT_EQ(stopped,
            std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + k + 1));
  EXPECT_EQ(choice["finish_reason"], "stop");

  // With min_tokens past k, that token cannot come at k: the run differs
  // there, and no stop token ends it before min_tokens.
  const Reply m = Post(cluster_->http(), "/v1/completions",
                       Body({{"prompt", prompt},
                             {"max_tokens", 12},
                             {"temperature", 0},
                             {"stop_token_ids", {stop}},
                             {"min_tokens", k + 2},
                             {"return_token_ids", true}}));
  ASSERT_EQ(m.status, 200) << m.body;
  const std::vector<int32_t> held = json::parse(m.body)["choices"][0]["token_ids"];
  ASSERT_GE(held.size(), k + 2);
  EXPECT_EQ(std::vector<int32_t>(held.begin(), held.begin() + k),
            std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + k));
  for (size_t i = 0; i < k + 2; ++i) EXPECT_NE(held[i], stop) << "position " << i;
  const Reply bad = Post(cluster_->http(), "/v1/completions",
                         Body({{"prompt", prompt}, {"max_tokens", 4}, {"min_tokens", 5}}));
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(json::parse(bad.body)["error"]["param"], "min_tokens");
}

// echo with logprobs: the prompt's tokens get theirs (the first null), equal
// to the log-softmax of the logits `strata logits` gives for each prefix,
// though the prompt is prefilled in chunks of 4 tokens (so a chunk's last
// position predicts the next chunk's first token). Streamed, the echo chunk
// carries them.
TEST(HttpPromptLogprobsTest, EchoGivesThePromptTokensLogprobs) {
  const std::string dir = FreshDir("prompt-logprobs");
  auto cluster = Cluster::Start(TestModel("llama"), 2,
                                {"--http-listen", "127.0.0.1:0", "--max-batch-tokens", "4"});
  ASSERT_NE(cluster, nullptr);
  const std::string prompt_text = "The old lighthouse keeper watched the harbour";
  json body = {{"model", "llama-f32-1"}, {"prompt", prompt_text},   {"max_tokens", 3},
               {"temperature", 0},       {"ignore_eos", true},      {"echo", true},
               {"logprobs", 2},          {"return_token_ids", true}};
  const Reply r = Post(cluster->http(), "/v1/completions", body, "");
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = json::parse(r.body)["choices"][0];
  const std::vector<int32_t> prompt = choice["prompt_token_ids"];
  const std::vector<int32_t> tokens = choice["token_ids"];
  ASSERT_GT(prompt.size(), 8u) << "the prompt should span several chunks of 4";
  ASSERT_EQ(tokens.size(), 3u);
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), prompt.size() + 3) << lp.dump();
  ASSERT_EQ(lp["token_logprobs"].size(), prompt.size() + 3);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(choice["text"].get<std::string>().rfind(prompt_text, 0), 0u);
  for (size_t k = 1; k < prompt.size(); ++k) {
    std::string ids, out;
    for (size_t i = 0; i < k; ++i) absl::StrAppend(&ids, i ? "," : "", prompt[i]);
    const std::string file = absl::StrCat(dir, "/prefix", k, ".f32");
    ASSERT_EQ(RunCommand(absl::StrCat(STRATA_BINARY, " logits --model ", TestModel("llama"),
                                      " --ids ", ids, " --steps 0 --out ", file, " 2>/dev/null"),
                         &out),
              0)
        << out;
    const std::string raw = ReadFile(file);
    const int64_t vocab = json::parse(out)["vocab_size"];
    ASSERT_GE(raw.size(), vocab * sizeof(float));
    const float* row = reinterpret_cast<const float*>(raw.data());
    double max = row[0], sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    const double lse = max + std::log(sum);
    EXPECT_NEAR(lp["token_logprobs"][k].get<double>(), row[prompt[k]] - lse, 1e-4) << "token " << k;
    const json& top = lp["top_logprobs"][k];
    ASSERT_TRUE(top.is_object()) << k;
    double best = -1e30;
    for (auto it = top.begin(); it != top.end(); ++it) best = std::max<double>(best, it.value());
    EXPECT_NEAR(best, max - lse, 1e-4) << "token " << k;
    EXPECT_GE(lp["text_offset"][k], lp["text_offset"][k - 1]);
  }
  // The completion's tokens follow, as without echo.
  const Reply plain = Post(cluster->http(), "/v1/completions",
                           {{"model", "llama-f32-1"},
                            {"prompt", prompt_text},
                            {"max_tokens", 3},
                            {"temperature", 0},
                            {"ignore_eos", true},
                            {"logprobs", 2}},
                           "");
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json plain_lp = json::parse(plain.body)["choices"][0]["logprobs"];
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(lp["token_logprobs"][prompt.size() + i].get<double>(),
                plain_lp["token_logprobs"][i].get<double>(), 1e-6);
  }
  // Streamed: the first chunk is the prompt with the same log-probabilities.
  body["stream"] = true;
  const Reply s = Post(cluster->http(), "/v1/completions", body, "");
  ASSERT_EQ(s.status, 200) << s.body;
  bool done = false;
  const std::vector<json> events = Events(s.body, &done);
  ASSERT_TRUE(done);
  ASSERT_FALSE(events.empty());
  const json first = events[0]["choices"][0];
  EXPECT_EQ(first["text"], prompt_text);
  ASSERT_EQ(first["logprobs"]["token_logprobs"].size(), prompt.size());
  EXPECT_TRUE(first["logprobs"]["token_logprobs"][0].is_null());
  for (size_t k = 1; k < prompt.size(); ++k) {
    EXPECT_NEAR(first["logprobs"]["token_logprobs"][k].get<double>(),
                lp["token_logprobs"][k].get<double>(), 1e-6);
  }
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

// A chat with tools, a tool call and its result through a 2-worker cluster:
// the qwen2 test model carries Qwen2.5-Instruct's real template, and the
// prompt ids equal Jinja2's rendering (set up as transformers does) encoded
// by the model's tokenizer; the completion streams, deltas equal to the
// non-streamed text.
TEST(HttpToolsTest, AToolConversationRendersAsJinjaAndStreams) {
  // A tiny qwen2 with room for the template's tool instructions.
  const std::string model = FreshDir("qwen2-tools") + "/qwen2-f32-1";
  ModelSpec spec;
  spec.flavour = "qwen2";
  spec.positions = 2048;
  ASSERT_TRUE(MakeModel(spec, model).ok());
  auto cluster = Cluster::Start(model, 2, {"--http-listen", "127.0.0.1:0"});
  ASSERT_NE(cluster, nullptr);
  const json tools = json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web.",
      "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])");
  const json messages = json::parse(R"([
    {"role": "system", "content": "You are the harbour master's assistant."},
    {"role": "user", "content": "Weather in Brest? 🌊"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Brest\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"c\": 14}"}])");
  json body = {{"model", "qwen2-f32-1"},  {"messages", messages}, {"tools", tools},
               {"max_tokens", 12},        {"temperature", 0},     {"ignore_eos", true},
               {"return_token_ids", true}};
  const Reply r = Post(cluster->http(), "/v1/chat/completions", body, "");
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = json::parse(r.body)["choices"][0];
  const std::vector<int32_t> prompt = choice["prompt_token_ids"];

  // Jinja2's rendering of the same conversation (arguments as the object,
  // as the gateway passes them), encoded by the model's tokenizer.
  json reference_messages = messages;
  reference_messages[2]["tool_calls"][0]["function"]["arguments"] = {{"city", "Brest"}};
  reference_messages[2]["content"] = "";
  const json config = json::parse(ReadFile(model + "/tokenizer_config.json"));
  json variables = {{"messages", reference_messages},
                    {"tools", tools},
                    {"documents", nullptr},
                    {"add_generation_prompt", true}};
  for (const char* token : {"bos_token", "eos_token", "pad_token"})
    variables[token] = config[token];
  const std::string dir = FreshDir("tools-reference");
  std::ofstream(dir + "/cases.json")
      << json::array({{{"template", config["chat_template"]}, {"variables", variables}}}).dump();
  std::string out;
  ASSERT_EQ(RunCommand(absl::StrCat("/usr/bin/python3 ", STRATA_SOURCE_DIR,
                                    "/tests/reference/jinja_reference.py ", dir, "/cases.json ",
                                    dir, "/out.json"),
                       &out),
            0)
      << out;
  const json rendered = json::parse(ReadFile(dir + "/out.json"))[0];
  ASSERT_TRUE(rendered["ok"].get<bool>()) << rendered.dump();
  const std::string text = rendered["output"];
  EXPECT_NE(text.find("<tools>"), std::string::npos) << text;
  EXPECT_NE(text.find("<tool_response>"), std::string::npos) << text;
  auto tokenizer = LoadTokenizer(model);
  ASSERT_TRUE(tokenizer.ok());
  auto ids = (*tokenizer)->Encode(text, /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(prompt, *ids);

  // Streamed: the same text, in deltas (tool-call hold-back on).
  body["stream"] = true;
  body.erase("return_token_ids");
  const Reply s = Post(cluster->http(), "/v1/chat/completions", body, "");
  ASSERT_EQ(s.status, 200) << s.body;
  bool done = false;
  std::string streamed;
  std::string finish;
  for (const json& e : Events(s.body, &done)) {
    for (const json& c : e["choices"]) {
      if (c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        streamed += c["delta"]["content"].get<std::string>();
      }
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(streamed, choice["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, choice["finish_reason"].get<std::string>());
  // A template error is a 400 with the template's message: Qwen2.5's takes any role,
  // so a bad tool call stands in (its arguments are no JSON object).
  json bad = body;
  bad["stream"] = false;
  bad["messages"][2]["tool_calls"][0]["function"].erase("name");
  EXPECT_EQ(Post(cluster->http(), "/v1/chat/completions", bad, "").status, 400);
  EXPECT_TRUE(cluster->WaitKvFree(5000));
}

}  // namespace
}  // namespace strata::testing
