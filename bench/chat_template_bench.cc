// Rendering a chat template per request: Qwen2.5-Instruct's published
// template (what `strata make-model --flavour qwen2` writes) on a 10-turn
// conversation with 3 tools, a tool call and its result, as the gateway
// renders it for every chat request. Prints one JSON object, then a summary.
//   ./build/bench/chat_template_bench [--model DIR] [--iterations 20000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_main.h"
#include "runtime/chat_template.h"
#include "runtime/status_macros.h"
#include "tools/flags.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

absl::Status Run(int argc, char** argv) {
  std::string model;
  int64_t iterations = 20000;
  FlagSet flags;
  flags.String("model", &model,
               "model folder whose template to render (default: a qwen2 "
               "test model made in a temporary folder)");
  flags.Int("iterations", &iterations, "renders to time (20000)");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (iterations < 10) return absl::InvalidArgumentError("--iterations: at least 10");
  if (model.empty()) {
    model = (std::filesystem::temp_directory_path() / "strata-chat-bench-qwen2").string();
    if (!std::filesystem::exists(model + "/tokenizer_config.json")) {
      ModelSpec spec;
      spec.flavour = "qwen2";
      RETURN_IF_ERROR(MakeModel(spec, model));
    }
  }
  ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::FromModelDir(model));
  ChatOptions options;
  options.tools = nlohmann::ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web.",
      "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
        "required": ["query"]}}},
    {"type": "function", "function": {"name": "tide_table", "description": "Tides of a port.",
      "parameters": {"type": "object", "properties": {"port": {"type": "string"},
        "days": {"type": "integer"}}, "required": ["port"]}}}])");
  std::vector<ChatMessage> messages = {{"system", "You are the harbour master's assistant."}};
  for (int turn = 0; turn < 9; ++turn) {
    messages.push_back({"user", absl::StrCat("Question ", turn, ": when is the next high tide?")});
    messages.push_back({"assistant", absl::StrCat("Answer ", turn, ": at six in the evening.")});
  }
  ChatMessage call{"assistant", ""};
  call.extra["tool_calls"] = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "tide_table", "arguments": {"port": "Brest", "days": 2}}}])");
  messages.push_back({"user", "And in Brest?"});
  messages.push_back(call);
  messages.push_back({"tool", "{\"high\": [\"06:10\", \"18:32\"]}"});
  ASSIGN_OR_RETURN(std::string text, chat.Render(messages, options));
  std::vector<double> us;
  us.reserve(iterations);
  using Clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < iterations; ++i) {
    const auto t0 = Clock::now();
    absl::StatusOr<std::string> r = chat.Render(messages, options);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (!r.ok() || r->size() != text.size()) return absl::InternalError("renders differ");
  }
  std::sort(us.begin(), us.end());
  const double p50 = us[us.size() / 2], p99 = us[us.size() * 99 / 100];
  std::printf(
      "{\"template\": \"qwen2.5\", \"messages\": %zu, \"tools\": 3, \"prompt_bytes\": %zu, "
      "\"iterations\": %lld, \"render_us_p50\": %.2f, \"render_us_p99\": %.2f}\n",
      messages.size(), text.size(), static_cast<long long>(iterations), p50, p99);
  std::printf(
      "chat template: %zu messages, 3 tools -> %zu bytes; render p50 %.1f us, p99 %.1f us\n",
      messages.size(), text.size(), p50, p99);
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("chat_template_bench", strata::Run, argc, argv);
}
