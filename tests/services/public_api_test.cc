// The public plane under abuse, against a live cluster: API keys, the
// gateway's own TLS, invalid UTF-8 in every text field, and prompts far past
// the context (refused before they are tokenized).
#include <unistd.h>

#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/certs.h"
#include "services/common/server.h"
#include "services/common/tls.h"
#include "tests/services/cluster_util.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

constexpr char kKey[] = "sk-strata-test-0123456789abcdef";

StreamResult StreamWithKey(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                           const std::string& key) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
  auto reader = stub.Generate(&ctx, request);
  StreamResult r;
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      r.tokens.insert(r.tokens.end(), response.delta().token_ids().begin(),
                      response.delta().token_ids().end());
    }
  }
  const grpc::Status st = reader->Finish();
  r.code = st.error_code();
  r.message = st.error_message();
  return r;
}

class PublicApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(FreshDir("public-api"));
    std::ofstream(*dir_ + "/keys") << "# one key per line\n\n" << kKey << "\n";
    // The public port's certificate, from a CA the clients are given.
    ASSERT_TRUE(
        MakeCertificates(*dir_ + "/public", {{Role::kGateway, "public"}}, {"127.0.0.1"}, 1).ok());
    cluster_ = Cluster::Start(TestModel("llama"), 2,
                              {"--api-key-file", *dir_ + "/keys", "--max-context", "64",
                               "--http-listen", "127.0.0.1:0", "--gateway-flags",
                               absl::StrCat("--public-tls-cert ", *dir_, "/public/public.crt ",
                                            "--public-tls-key ", *dir_, "/public/public.key")})
                   .release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (cluster_ == nullptr) GTEST_SKIP() << "the cluster did not start";
  }
  std::unique_ptr<v1::Generation::Stub> Tls() const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(*dir_ + "/public/ca.crt");
    return v1::Generation::NewStub(
        grpc::CreateChannel(cluster_->gateway(), grpc::SslCredentials(ssl)));
  }
  static Cluster* cluster_;
  static std::string* dir_;
};
Cluster* PublicApiTest::cluster_ = nullptr;
std::string* PublicApiTest::dir_ = nullptr;

TEST_F(PublicApiTest, GenerationNeedsAKeyOfTheGateway) {
  auto stub = Tls();
  const v1::GenerateRequest req = TextRequest("Once upon a time", 4);
  const StreamResult none = StreamWithKey(*stub, req, "");
  EXPECT_EQ(none.code, grpc::StatusCode::UNAUTHENTICATED) << none.message;
  const StreamResult wrong = StreamWithKey(*stub, req, "sk-strata-test-0123456789abcdeX");
  EXPECT_EQ(wrong.code, grpc::StatusCode::UNAUTHENTICATED) << wrong.message;
  EXPECT_NE(wrong.message.find("unknown API key"), std::string::npos) << wrong.message;
  const StreamResult ok = StreamWithKey(*stub, req, kKey);
  ASSERT_EQ(ok.code, 0) << ok.message;
  EXPECT_EQ(ok.tokens.size(), 4u);
  EXPECT_EQ(ok.tokens, GenerateLocally(TestModel("llama"), "Once upon a time", 4).tokens);

  grpc::ClientContext ctx;
  v1::TokenizeRequest treq;
  treq.set_text("hello");
  v1::TokenizeResponse tresp;
  EXPECT_EQ(stub->Tokenize(&ctx, treq, &tresp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx2;
  ctx2.AddMetadata("authorization", std::string("Bearer ") + kKey);
  v1::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(&ctx2, {}, &info).ok());
}

TEST_F(PublicApiTest, ThePublicPortSpeaksTlsOnly) {
  auto plain = v1::Generation::NewStub(Dial(cluster_->gateway()));
  const StreamResult r = StreamWithKey(*plain, TextRequest("Once upon a time", 2), kKey);
  EXPECT_EQ(r.code, grpc::StatusCode::UNAVAILABLE) << r.message;
}

// Protobuf refuses invalid UTF-8 in a string without saying where; the
// gateway names the field.
TEST_F(PublicApiTest, InvalidUtf8IsInvalidArgumentNamingTheField) {
  auto stub = Tls();
  const std::string bad = "ok \xC3\x28 not";
  struct Case {
    v1::GenerateRequest request;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({TextRequest(bad, 2), "prompt"});
  cases.push_back({TextRequest("fine", 2), "stop[1]"});
  cases.back().request.add_stop("x");
  cases.back().request.add_stop(bad);
  cases.push_back({TextRequest("fine", 2), "request_id"});
  cases.back().request.set_request_id(bad);
  v1::GenerateRequest chat;
  chat.set_max_tokens(2);
  chat.mutable_messages()->add_messages()->set_role("user");
  v1::ChatMessage* m = chat.mutable_messages()->add_messages();
  m->set_role("user");
  m->set_content(bad);
  cases.push_back({chat, "messages.messages[1].content"});
  for (const Case& c : cases) {
    const StreamResult r = StreamWithKey(*stub, c.request, kKey);
    EXPECT_EQ(r.code, grpc::StatusCode::INVALID_ARGUMENT) << c.field << ": " << r.message;
    EXPECT_EQ(r.message.rfind(c.field + ": not valid UTF-8", 0), 0u) << r.message;
  }
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kKey);
  v1::TokenizeRequest treq;
  treq.set_text(bad);
  v1::TokenizeResponse tresp;
  const grpc::Status st = stub->Tokenize(&ctx, treq, &tresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message().rfind("text: not valid UTF-8", 0), 0u) << st.error_message();
}

// A prompt is measured against the context before it is tokenized: one that
// cannot fit is OUT_OF_RANGE naming its bytes, and one past the message limit
// the context sets (about 70 KiB here) is refused by gRPC itself.
TEST_F(PublicApiTest, HugePromptsAreRefusedBeforeTokenizing) {
  auto stub = Tls();
  const StreamResult long_prompt =
      StreamWithKey(*stub, TextRequest(std::string(16 << 10, 'a'), 2), kKey);
  EXPECT_EQ(long_prompt.code, grpc::StatusCode::OUT_OF_RANGE) << long_prompt.message;
  EXPECT_EQ(long_prompt.message.rfind("prompt: 16384 bytes make at least", 0), 0u)
      << long_prompt.message;
  const StreamResult huge = StreamWithKey(*stub, TextRequest(std::string(100 << 20, 'a'), 2), kKey);
  EXPECT_EQ(huge.code, grpc::StatusCode::RESOURCE_EXHAUSTED) << huge.message;
  // A prompt that fits is served as before.
  const StreamResult ok = StreamWithKey(*stub, TextRequest("Once upon a time", 2), kKey);
  EXPECT_EQ(ok.code, 0) << ok.message;
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// The Python example over the gateway's TLS with an API key streams the
// single-process tokens.
TEST_F(PublicApiTest, PythonClientWithKeyAndTls) {
  std::string out;
  const int rc = RunCommand(
      absl::StrCat("/usr/bin/python3 ", STRATA_SOURCE_DIR, "/examples/python_client.py --json",
                   " --stubs ", STRATA_PYTHON_STUBS, " --address ", cluster_->gateway(),
                   " --tls-ca ", *dir_, "/public/ca.crt --api-key ", kKey,
                   " --prompt 'Once upon a time' --max-tokens 6 2>&1"),
      &out);
  ASSERT_EQ(rc, 0) << out;
  const auto want = GenerateLocally(TestModel("llama"), "Once upon a time", 6).tokens;
  std::string ids;
  for (size_t i = 0; i < want.size(); ++i) absl::StrAppend(&ids, i ? ", " : "", want[i]);
  EXPECT_NE(out.find("\"token_ids\": [" + ids + "]"), std::string::npos) << out;
  // Without the key the example reports UNAUTHENTICATED.
  EXPECT_NE(RunCommand(absl::StrCat("STRATA_API_KEY= /usr/bin/python3 ", STRATA_SOURCE_DIR,
                                    "/examples/python_client.py --stubs ", STRATA_PYTHON_STUBS,
                                    " --address ", cluster_->gateway(), " --tls-ca ", *dir_,
                                    "/public/ca.crt --prompt hi 2>&1"),
                       &out),
            0);
  EXPECT_NE(out.find("UNAUTHENTICATED"), std::string::npos) << out;
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

v1::Finished FinishedOf(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                        std::vector<int32_t>* tokens) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kKey);
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse response;
  v1::Finished finished;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      tokens->insert(tokens->end(), response.delta().token_ids().begin(),
                     response.delta().token_ids().end());
    } else {
      finished = response.finished();
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  return finished;
}

// Without a seed the gateway draws one and returns it in Finished.seed;
// sending it back reproduces the run. A given seed comes back unchanged.
TEST_F(PublicApiTest, UnseededRequestsGetAFreshSeedThatReproducesThem) {
  auto stub = Tls();
  v1::GenerateRequest r = TextRequest("Once upon a time", 12, {}, true);
  r.mutable_sampling()->set_temperature(0.9f);
  r.mutable_sampling()->clear_seed();
  std::vector<int32_t> a, b, again;
  const v1::Finished fa = FinishedOf(*stub, r, &a);
  const v1::Finished fb = FinishedOf(*stub, r, &b);
  EXPECT_NE(fa.seed(), fb.seed());
  EXPECT_LT(fa.seed(), uint64_t{1} << 53);
  r.mutable_sampling()->set_seed(fa.seed());
  const v1::Finished fr = FinishedOf(*stub, r, &again);
  EXPECT_EQ(fr.seed(), fa.seed());
  EXPECT_EQ(again, a);
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.seed = fa.seed();
  EXPECT_EQ(again,
            GenerateLocally(TestModel("llama"), "Once upon a time", 12, sp, true, 64).tokens);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// The HTTP API shares the public TLS: HTTPS with the CA and a key works,
// plain HTTP on that port does not.
TEST_F(PublicApiTest, TheHttpApiSpeaksTlsWithKeys) {
  const std::string script = absl::StrCat(
      "import json, ssl, sys, urllib.request\n"
      "ctx = ssl.create_default_context(cafile='",
      *dir_,
      "/public/ca.crt')\n"
      "req = urllib.request.Request('https://",
      cluster_->http(),
      "/v1/completions', "
      "data=json.dumps({'model': 'llama-f32-1', 'prompt': 'Once upon a time', 'max_tokens': 4, "
      "'temperature': 0, 'return_token_ids': True}).encode(), "
      "headers={'Authorization': 'Bearer ",
      kKey,
      "', 'Content-Type': 'application/json'})\n"
      "body = json.loads(urllib.request.urlopen(req, context=ctx, timeout=30).read())\n"
      "print(json.dumps(body['choices'][0]['token_ids']))\n"
      "try:\n"
      "  urllib.request.urlopen('http://",
      cluster_->http(),
      "/health', timeout=5)\n"
      "  print('PLAIN-OK')\n"
      "except Exception as e:\n"
      "  print('PLAIN-REFUSED')\n");
  const std::string path = *dir_ + "/https.py";
  std::ofstream(path) << script;
  std::string out;
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + path + " 2>&1", &out), 0) << out;
  const auto want =
      GenerateLocally(TestModel("llama"), "Once upon a time", 4, {}, false, 64).tokens;
  std::string ids;
  for (size_t i = 0; i < want.size(); ++i) absl::StrAppend(&ids, i ? ", " : "", want[i]);
  EXPECT_NE(out.find("[" + ids + "]"), std::string::npos) << out;
  EXPECT_NE(out.find("PLAIN-REFUSED"), std::string::npos) << out;
}

}  // namespace
}  // namespace strata::testing
