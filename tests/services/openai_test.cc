// OpenAI's request and response shapes, as pure functions: what a request
// becomes, each malformed one refused with 400 naming the field, the
// parameters that are not supported yet refused by name (and accepted at
// their neutral values), and the objects the SDKs read.
#include "services/gateway/openai.h"

#include "gtest/gtest.h"

namespace strata::openai {
namespace {

using nlohmann::json;

const ModelCard kModel{"org/model", 256, 1700000000};

ParseResult Parse(const json& body, bool chat = false) {
  return ParseRequest(body.dump(), chat, kModel);
}

TEST(OpenAiTest, ACompletionBecomesStrataRequest) {
  const ParseResult p = Parse({{"model", "org/model"},
                               {"prompt", "Once upon a time"},
                               {"max_tokens", 7},
                               {"temperature", 0.5},
                               {"top_p", 0.9},
                               {"top_k", 40},
                               {"min_p", 0.05},
                               {"repetition_penalty", 1.1},
                               {"presence_penalty", -0.5},
                               {"frequency_penalty", 1.5},
                               {"seed", 42},
                               {"stop", {"\n", "END"}},
                               {"echo", true},
                               {"stream", true},
                               {"stream_options", {{"include_usage", true}}},
                               {"user", "u-1"}});
  ASSERT_TRUE(p.ok) << p.error.message;
  const v1::GenerateRequest& g = p.request.generate;
  EXPECT_EQ(g.prompt(), "Once upon a time");
  EXPECT_EQ(g.max_tokens(), 7u);
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().top_p(), 0.9f);
  EXPECT_EQ(g.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(g.sampling().min_p(), 0.05f);
  EXPECT_FLOAT_EQ(g.sampling().repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(g.sampling().presence_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(g.sampling().frequency_penalty(), 1.5f);
  EXPECT_EQ(g.sampling().seed(), 42u);
  EXPECT_TRUE(p.request.seed_given);
  ASSERT_EQ(g.stop_size(), 2);
  EXPECT_EQ(g.stop(1), "END");
  EXPECT_TRUE(p.request.echo && p.request.stream && p.request.include_usage);
  // Defaults: OpenAI's temperature 1 and 16 tokens; no seed given.
  const ParseResult d = Parse({{"model", "org/model"}, {"prompt", "x"}});
  ASSERT_TRUE(d.ok);
  EXPECT_FLOAT_EQ(d.request.generate.sampling().temperature(), 1.0f);
  EXPECT_EQ(d.request.generate.max_tokens(), 16u);
  EXPECT_FALSE(d.request.seed_given);
}

TEST(OpenAiTest, PromptsAsTextTokenIdsOrBatches) {
  auto ids = Parse({{"model", "org/model"}, {"prompt", {1, 5, 9}}});
  ASSERT_TRUE(ids.ok);
  EXPECT_EQ(ids.request.generate.prompt_tokens().ids_size(), 3);
  auto nested = Parse({{"model", "org/model"}, {"prompt", {{1, 5}}}});
  ASSERT_TRUE(nested.ok);
  EXPECT_EQ(nested.request.generate.prompt_tokens().ids(1), 5);
  auto one = Parse({{"model", "org/model"}, {"prompt", {"hi"}}});
  ASSERT_TRUE(one.ok);
  EXPECT_EQ(one.request.generate.prompt(), "hi");
  EXPECT_EQ(one.request.prompts.size(), 1u);
  EXPECT_EQ(one.request.n(), 1);
  // A batch: every prompt with the request's parameters, n choices each.
  auto batch = Parse({{"model", "org/model"},
                      {"prompt", {{1, 2}, {3}}},
                      {"n", 3},
                      {"best_of", 3},
                      {"max_tokens", 4}});
  ASSERT_TRUE(batch.ok) << batch.error.message;
  ASSERT_EQ(batch.request.prompts.size(), 2u);
  EXPECT_EQ(batch.request.n(), 3);
  EXPECT_EQ(batch.request.prompts[1].prompt_tokens().ids(0), 3);
  EXPECT_EQ(batch.request.prompts[1].max_tokens(), 4u);
  EXPECT_EQ(batch.request.prompts[1].n(), 3u);
  EXPECT_EQ(batch.request.generate.prompt_tokens().ids_size(), 2);
  auto texts = Parse({{"model", "org/model"}, {"prompt", {"a", "b"}}});
  ASSERT_TRUE(texts.ok);
  EXPECT_EQ(texts.request.prompts[1].prompt(), "b");
}

TEST(OpenAiTest, ChatMessagesWithTextPartsAndDeveloperRole) {
  const ParseResult p = Parse(
      {{"model", "org/model"},
       {"messages",
        {{{"role", "developer"}, {"content", "Be brief."}},
         {{"role", "user"},
          {"content",
           {{{"type", "text"}, {"text", "Hello "}}, {{"type", "text"}, {"text", "there"}}}}}}},
       {"max_completion_tokens", 5}},
      /*chat=*/true);
  ASSERT_TRUE(p.ok) << p.error.message;
  const v1::Conversation& c = p.request.generate.messages();
  ASSERT_EQ(c.messages_size(), 2);
  EXPECT_EQ(c.messages(0).role(), "system");
  EXPECT_EQ(c.messages(1).content(), "Hello there");
  EXPECT_EQ(p.request.generate.max_tokens(), 5u);
  // Chat defaults to the context, not 16.
  const ParseResult d =
      Parse({{"model", "org/model"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}}, true);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.request.generate.max_tokens(), 256u);
}

// Each malformed body is 400 naming its field (404 for an unknown model).
TEST(OpenAiTest, MalformedRequestsNameTheField) {
  struct Case {
    json body;
    bool chat;
    int status;
    std::string param;
  };
  const json ok_msgs = {{{"role", "user"}, {"content", "x"}}};
  const std::vector<Case> cases = {
      {{{"prompt", "x"}}, false, 400, "model"},
      {{{"model", 3}, {"prompt", "x"}}, false, 400, "model"},
      {{{"model", "other"}, {"prompt", "x"}}, false, 404, "model"},
      {{{"model", "org/model"}}, false, 400, "prompt"},
      {{{"model", "org/model"}, {"prompt", 5}}, false, 400, "prompt"},
      {{{"model", "org/model"}, {"prompt", {1, -2}}}, false, 400, "prompt[1]"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"max_tokens", 0}}, false, 400, "max_tokens"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"max_tokens", 100000}}, false, 400, "max_tokens"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"max_tokens", "9"}}, false, 400, "max_tokens"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"temperature", -1}}, false, 400, "temperature"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"temperature", 3}}, false, 400, "temperature"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"top_p", 0}}, false, 400, "top_p"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"top_k", 1.5}}, false, 400, "top_k"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"seed", "7"}}, false, 400, "seed"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"stop", {1}}}, false, 400, "stop[0]"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"stream", "yes"}}, false, 400, "stream"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"stream_options", {{"include_usage", true}}}},
       false,
       400,
       "stream_options"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"n", 1000000}}, false, 400, "n"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"logprobs", 21}}, false, 400, "logprobs"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"top_logprobs", 2}}, false, 400, "top_logprobs"},
      {{{"model", "org/model"},
        {"messages", {{{"role", "user"}, {"content", "x"}}}},
        {"top_logprobs", 2}},
       true,
       400,
       "top_logprobs"},
      {{{"model", "org/model"},
        {"messages", {{{"role", "user"}, {"content", "x"}}}},
        {"logprobs", 3}},
       true,
       400,
       "logprobs"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"presence_penalty", 2.5}},
       false,
       400,
       "presence_penalty"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"frequency_penalty", "1"}},
       false,
       400,
       "frequency_penalty"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"n", 0}}, false, 400, "n"},
      {{{"model", "org/model"}, {"prompt", {"a", "b", "c"}}, {"n", 30}}, false, 400, "n"},
      {{{"model", "org/model"}, {"prompt", {"a", 5}}}, false, 400, "prompt[1]"},
      {{{"model", "org/model"}, {"prompt", {"a", json::array()}}}, false, 400, "prompt[1]"},
      {{{"model", "org/model"}, {"prompt", {{1, 2}, {3, -4}}}}, false, 400, "prompt[1][1]"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"suffix", "end"}}, false, 400, "suffix"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"echo", true}}, true, 400, "echo"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"logit_bias", {{"5", 100}}}},
       false,
       400,
       "logit_bias"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"best_of", 3}}, false, 400, "best_of"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"n", 2}, {"best_of", 3}}, false, 400, "best_of"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"bogus", 1}}, false, 400, "bogus"},
      {{{"model", "org/model"}, {"messages", ok_msgs}}, false, 400, "messages"},
      {{{"model", "org/model"}, {"prompt", "x"}}, true, 400, "prompt"},
      {{{"model", "org/model"}, {"messages", json::array()}}, true, 400, "messages"},
      {{{"model", "org/model"}, {"messages", {{{"role", "robot"}, {"content", "x"}}}}},
       true,
       400,
       "messages[0].role"},
      {{{"model", "org/model"}, {"messages", {{{"role", "user"}}}}},
       true,
       400,
       "messages[0].content"},
      {{{"model", "org/model"},
        {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
       true,
       400,
       "messages[0].content[0]"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"tools", {{{"type", "function"}}}}},
       true,
       400,
       "tools[0].function"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"tools", {{{"type", "retrieval"}}}}},
       true,
       400,
       "tools[0].type"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"tools", "get_weather"}},
       true,
       400,
       "tools"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"tool_choice", "required"}},
       true,
       400,
       "tool_choice"},
      {{{"model", "org/model"}, {"prompt", "x"}, {"tools", json::array()}}, false, 400, "tools"},
      {{{"model", "org/model"},
        {"messages", {{{"role", "user"}, {"content", "x"}, {"tool_calls", json::array()}}}}},
       true,
       400,
       "messages[0].tool_calls"},
      {{{"model", "org/model"},
        {"messages",
         {{{"role", "assistant"},
           {"content", nullptr},
           {"tool_calls", {{{"function", {{"arguments", "{}"}}}}}}}}}},
       true,
       400,
       "messages[0].tool_calls[0].function.name"},
      {{{"model", "org/model"}, {"messages", ok_msgs}, {"chat_template_kwargs", "x"}},
       true,
       400,
       "chat_template_kwargs"},
      {{{"model", "org/model"},
        {"messages", ok_msgs},
        {"response_format", {{"type", "json_object"}}}},
       true,
       400,
       "response_format"},
  };
  for (const Case& c : cases) {
    const ParseResult p = Parse(c.body, c.chat);
    ASSERT_FALSE(p.ok) << c.body.dump();
    EXPECT_EQ(p.error.status, c.status) << c.body.dump() << ": " << p.error.message;
    EXPECT_EQ(p.error.param, c.param) << c.body.dump() << ": " << p.error.message;
    EXPECT_EQ(p.error.message.rfind(c.param, 0), 0u) << p.error.message;
  }
  // Bodies that are not JSON, or not an object.
  for (const std::string& body :
       {std::string("{bad"), std::string("[1]"), std::string(""),
        std::string("{\"model\": \"org/model\", \"prompt\": \"\xC3\x28\"}"),
        std::string("{\"model\": \"org/model\", \"max_tokens\": 1e400}")}) {
    const ParseResult p = ParseRequest(body, false, kModel);
    ASSERT_FALSE(p.ok) << body;
    EXPECT_EQ(p.error.status, 400);
    EXPECT_EQ(p.error.param, "body") << body << ": " << p.error.message;
  }
}

// Unsupported parameters at their neutral values are what SDKs send by
// default: accepted.
// Tools, tool calls and tool results reach the Conversation for the template.
TEST(OpenAiTest, ToolsAndToolMessagesBecomeTheConversationsFields) {
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather.", "parameters": {"type": "object", "properties": {}}}}])");
  const json messages = json::parse(R"([
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C"}])");
  ParseResult p = Parse({{"model", "org/model"},
                         {"messages", messages},
                         {"tools", tools},
                         {"tool_choice", "auto"},
                         {"parallel_tool_calls", true},
                         {"chat_template_kwargs", {{"enable_thinking", false}}}},
                        true);
  ASSERT_TRUE(p.ok) << p.error.message;
  const v1::Conversation& c = p.request.generate.messages();
  EXPECT_EQ(json::parse(c.tools_json()), tools);
  EXPECT_EQ(json::parse(c.template_kwargs_json()), json({{"enable_thinking", false}}));
  ASSERT_EQ(c.messages_size(), 3);
  EXPECT_EQ(json::parse(c.messages(1).tool_calls_json()), messages[1]["tool_calls"]);
  EXPECT_EQ(c.messages(1).content(), "");
  EXPECT_EQ(c.messages(2).tool_call_id(), "call_1");
  EXPECT_EQ(c.messages(2).name(), "get_weather");
  // tool_choice "none": the template does not see the tools.
  p = Parse(
      {{"model", "org/model"}, {"messages", messages}, {"tools", tools}, {"tool_choice", "none"}},
      true);
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_TRUE(p.request.generate.messages().tools_json().empty());
  // The response: tool_calls, content null, finish_reason tool_calls; streamed, their own chunk.
  Completion done;
  done.finish = v1::FINISH_REASON_TOOL_CALLS;
  v1::ToolCall call;
  call.set_id("call_9");
  call.set_name("get_weather");
  call.set_arguments(R"({"city":"Oslo"})");
  done.tool_calls.push_back(call);
  const json body = CompletionBody(p.request, {done});
  const json& message = body["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Oslo"})");
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  const json chunk = ToolCallsChunk(p.request, done);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["id"], "call_9");
}

TEST(OpenAiTest, NeutralValuesOfUnsupportedParametersAreAccepted) {
  const ParseResult p = Parse({{"model", "org/model"},
                               {"messages", {{{"role", "user"}, {"content", "x"}}}},
                               {"n", 1},
                               {"logprobs", false},
                               {"top_logprobs", nullptr},
                               {"presence_penalty", 0},
                               {"frequency_penalty", 0.0},
                               {"logit_bias", json::object()},
                               {"response_format", {{"type", "text"}}},
                               {"tools", json::array()},
                               {"tool_choice", nullptr},
                               {"stop_token_ids", json::array()},
                               {"min_tokens", 0}},
                              true);
  EXPECT_TRUE(p.ok) << p.error.message;
}

TEST(OpenAiTest, LogprobsInBothShapes) {
  const ParseResult text = Parse({{"model", "org/model"}, {"prompt", "x"}, {"logprobs", 3}});
  ASSERT_TRUE(text.ok) << text.error.message;
  EXPECT_EQ(text.request.logprobs, 3);
  EXPECT_EQ(text.request.generate.logprobs(), 3);
  const ParseResult chat = Parse({{"model", "org/model"},
                                  {"messages", {{{"role", "user"}, {"content", "x"}}}},
                                  {"logprobs", true},
                                  {"top_logprobs", 2}},
                                 true);
  ASSERT_TRUE(chat.ok) << chat.error.message;
  EXPECT_EQ(chat.request.logprobs, 2);
  EXPECT_FALSE(Parse({{"model", "org/model"}, {"prompt", "x"}}).request.generate.has_logprobs());

  const std::vector<LogprobEntry> entries = {{"He", 2, -0.5f, {{"He", -0.5f}, {"We", -1.5f}}},
                                             {TokenText("\xE2\x80"), 2, -2.0f, {}}};
  EXPECT_EQ(entries[1].token, "bytes:\\xe2\\x80");
  EXPECT_EQ(TokenText("caf\xC3\xA9"), "caf\xC3\xA9");
  const json legacy = LogprobsBody(text.request, entries, 5);
  EXPECT_EQ(legacy["tokens"], json::array({"He", "bytes:\\xe2\\x80"}));
  EXPECT_EQ(legacy["text_offset"], json::array({5, 7}));
  EXPECT_EQ(legacy["top_logprobs"][0]["We"], -1.5f);
  const json content = LogprobsBody(chat.request, entries, 0)["content"];
  EXPECT_EQ(content[1]["bytes"], json::array({0xE2, 0x80}));
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "We");
}

TEST(OpenAiTest, ServedNamesAreRepositoriesNeverHashes) {
  EXPECT_EQ(DefaultServedName("/m/x", "Qwen/Qwen2.5-3B-Instruct"), "Qwen/Qwen2.5-3B-Instruct");
  EXPECT_EQ(DefaultServedName("/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-3B/snapshots/"
                              "aa11bb22cc33/",
                              "/tmp/local/path"),
            "Qwen/Qwen2.5-3B");
  EXPECT_EQ(DefaultServedName("/models/current/", ""), "current");
}

TEST(OpenAiTest, ErrorsAndStatuses) {
  EXPECT_EQ(ErrorFromStatus(3, "prompt: too long").status, 400);
  EXPECT_EQ(ErrorFromStatus(3, "prompt: too long").param, "prompt");
  EXPECT_EQ(ErrorFromStatus(3, "prompt_tokens.ids[1]: 9 is outside").param, "prompt_tokens.ids[1]");
  EXPECT_EQ(ErrorFromStatus(3, "the queue is full: retry").param, "");
  EXPECT_EQ(ErrorFromStatus(11, "prompt: 99 tokens").status, 400);
  EXPECT_EQ(ErrorFromStatus(8, "queue full").status, 429);
  EXPECT_EQ(ErrorFromStatus(14, "no layer map").status, 503);
  EXPECT_EQ(ErrorFromStatus(16, "authorization: unknown API key").status, 401);
  const json body = ErrorBody({400, "top_p: bad", "invalid_request_error", "top_p", ""});
  EXPECT_EQ(body["error"]["message"], "top_p: bad");
  EXPECT_EQ(body["error"]["param"], "top_p");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

TEST(OpenAiTest, ResponseObjectsHaveOpenAisFields) {
  Request chat;
  chat.chat = true;
  Completion c;
  c.id = "chatcmpl-1";
  c.model = "org/model";
  c.fingerprint = Fingerprint("0.1.0", 0);
  c.created = 1700000001;
  c.text = "Hi!";
  c.prompt_ids = {1, 2};
  c.completion_ids = {7, 8};
  c.finish = v1::FINISH_REASON_EOS;
  c.prompt_tokens = 2;
  c.completion_tokens = 2;
  c.seed = 99;
  const json body = CompletionBody(chat, {c});
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hi!");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["total_tokens"], 4);
  EXPECT_EQ(body["seed"], 99u);
  const json role = ChunkBody(chat, c, "", {}, v1::FINISH_REASON_UNSPECIFIED, true);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  const json last = ChunkBody(chat, c, "", {}, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  Request text;
  text.include_usage = true;
  text.stream = true;
  const json usage = UsageChunk(text, {c});
  EXPECT_EQ(usage["object"], "text_completion");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 2);
}

TEST(OpenAiTest, SeveralChoicesCountEachPromptOnce) {
  // Two prompts x n = 2: choices 0, 1 of prompt 0 (3 tokens), 2, 3 of prompt 1 (5).
  const ParseResult p = Parse({{"model", "org/model"}, {"prompt", {"a", "b"}}, {"n", 2}});
  ASSERT_TRUE(p.ok) << p.error.message;
  std::vector<Completion> choices(4);
  for (int i = 0; i < 4; ++i) {
    choices[i].index = i;
    choices[i].text = std::string(1, static_cast<char>('w' + i));
    choices[i].prompt_tokens = i < 2 ? 3 : 5;
    choices[i].completion_tokens = i + 1;
    choices[i].finish = v1::FINISH_REASON_LENGTH;
    choices[i].seed = 40 + i % 2;
    choices[i].map_epoch = i == 2 ? 9 : 2;
    choices[i].fingerprint = Fingerprint("0.1.0", choices[i].map_epoch);
  }
  const json body = CompletionBody(p.request, choices);
  ASSERT_EQ(body["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(body["choices"][i]["index"], i);
  EXPECT_EQ(body["choices"][3]["text"], "z");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 8);
  EXPECT_EQ(body["usage"]["completion_tokens"], 10);
  EXPECT_EQ(body["usage"]["total_tokens"], 18);
  EXPECT_EQ(body["seed"], 40u);  // choice j used seed + j
  EXPECT_EQ(body["system_fingerprint"], "strata-0.1.0-map9");
  EXPECT_EQ(ChunkBody(p.request, choices[3], "z", {},
                      v1::FINISH_REASON_UNSPECIFIED)["choices"][0]["index"],
            3);
  EXPECT_EQ(Fingerprint("0.1.0", 0), "strata-0.1.0");
}

}  // namespace
}  // namespace strata::openai
