// The `strata` command: generate text, inspect a checkpoint, make test models.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "runtime/chat_template.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/generate.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "services/common/signals.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

constexpr const char* kUsage = R"(usage: strata COMMAND [flags]

commands:
  generate    stream a completion of --prompt from a model (default: the embedded model)
  inspect     print a checkpoint's architecture, per-layer bytes and total bytes
  make-model  write a deterministic random-initialised test checkpoint
  quantize    write a float checkpoint's GPTQ / AWQ / FP8 version
  plan        print the layer-to-device placement for a model and devices
  certs       make a cluster CA and certificates for mutual TLS (coordinator, gateway, workers)
  logits      greedy-decode token ids and write every step's logits (parity checks)
  render      apply a model's chat template to a conversation (debugging templates)
  up          start a local cluster (coordinator, N workers, gateway) on loopback
  client      stream a completion from a running gateway
  coordinator run the coordinator (control plane and scheduler)
  worker      run a worker (one pipeline stage)
  gateway     run a gateway (the public Generation API)
  help        this text; `strata COMMAND --help` lists a command's flags
)";

absl::Status Generate(const std::vector<std::string>& args) {
  std::string model, prompt, device = "cpu";
  int64_t max_tokens = 64, top_k = 0, seed = 0, threads = 0, max_context = 0;
  double temperature = 0, top_p = 1, repetition_penalty = 1, min_p = 0;
  double presence_penalty = 0, frequency_penalty = 0;
  bool ignore_eos = false, stats = false, help = false, chat = false;
  std::string system;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the embedded default model)");
  flags.String("prompt", &prompt, "text to complete (required)");
  flags.Bool("chat", &chat, "the prompt is a user message, in the model's chat template");
  flags.String("system", &system, "a system message before it (implies --chat)");
  flags.Int("max-tokens", &max_tokens, "tokens to generate at most (64)");
  flags.Float("temperature", &temperature, "0 = greedy (0)");
  flags.Int("top-k", &top_k, "keep the k most likely tokens; 0 = off (0)");
  flags.Float("top-p", &top_p, "nucleus sampling mass; 1 = off (1)");
  flags.Float("min-p", &min_p, "drop tokens below min-p x the top probability; 0 = off (0)");
  flags.Float("repetition-penalty", &repetition_penalty, "1 = off (1)");
  flags.Float("presence-penalty", &presence_penalty, "OpenAI's, in [-2, 2]; 0 = off (0)");
  flags.Float("frequency-penalty", &frequency_penalty, "OpenAI's, in [-2, 2]; 0 = off (0)");
  flags.Int("seed", &seed, "sampling seed (0)");
  flags.Bool("ignore-eos", &ignore_eos, "keep generating past end-of-sequence");
  flags.String("device", &device, "where to run: cpu, cuda or cuda:N (cpu)");
  flags.Int("threads", &threads, "CPU threads; 0 = all available cores (0)");
  flags.Int("max-context", &max_context, "context length; 0 = the model's, capped at 8192");
  flags.Bool("stats", &stats, "print timing to stderr");
  flags.Bool("help", &help, "this list");
  RETURN_IF_ERROR(flags.Parse(args));
  if (help) {
    std::cout << "usage: strata generate --prompt TEXT [flags]\n" << flags.Usage();
    return absl::OkStatus();
  }
  if (prompt.empty())
    return absl::InvalidArgumentError("--prompt is required and must not be empty");
  if (seed < 0) return absl::InvalidArgumentError("--seed must not be negative");
  if (top_k < 0 || top_k > INT32_MAX) return absl::InvalidArgumentError("--top-k must be >= 0");
  if (model.empty()) {
    ASSIGN_OR_RETURN(model, DefaultModelDir());
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model));
  StageOptions options;
  options.device = device;
  options.threads = static_cast<int>(threads);
  options.max_context = max_context;
  options.max_sequences = 1;
  ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(model, config, {}, options));

  GenerateRequest request;
  if (chat || !system.empty()) {
    // As the gateway does for `messages`: render, then encode the template's
    // control tokens as ids and add no BOS of our own.
    ASSIGN_OR_RETURN(ChatTemplate chat_template, ChatTemplate::FromModelDir(model));
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", prompt});
    ASSIGN_OR_RETURN(prompt, chat_template.Render(messages, /*add_generation_prompt=*/true));
    ASSIGN_OR_RETURN(request.prompt_ids, tokenizer->Encode(prompt, /*add_bos=*/false));
  } else {
    ASSIGN_OR_RETURN(request.prompt_ids,
                     tokenizer->Encode(prompt, tokenizer->add_bos_by_default()));
  }
  request.max_tokens = max_tokens;
  request.ignore_eos = ignore_eos;
  request.sampling.temperature = static_cast<float>(temperature);
  request.sampling.top_k = static_cast<int32_t>(top_k);
  request.sampling.top_p = static_cast<float>(top_p);
  request.sampling.min_p = static_cast<float>(min_p);
  request.sampling.repetition_penalty = static_cast<float>(repetition_penalty);
  request.sampling.presence_penalty = static_cast<float>(presence_penalty);
  request.sampling.frequency_penalty = static_cast<float>(frequency_penalty);
  request.sampling.seed = static_cast<uint64_t>(seed);

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  IncrementalDetokenizer detok(*tokenizer, /*at_text_start=*/false);
  ASSIGN_OR_RETURN(GenerateResult result, Generate(*pipeline, request, [&](int32_t id) {
                     const std::string text = detok.Push(id);
                     std::fwrite(text.data(), 1, text.size(), stdout);
                     std::fflush(stdout);
                   }));
  const std::string tail = detok.Flush();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (stats) {
    const double decode_tokens = static_cast<double>(result.tokens.size()) - 1;
    std::fprintf(stderr,
                 "strata: %zu prompt tokens, %zu generated (%s); prefill %.1f tok/s, decode %.1f "
                 "tok/s on %d threads (%s)\n",
                 request.prompt_ids.size(), result.tokens.size(), FinishReasonName(result.finish),
                 request.prompt_ids.size() / result.prefill_seconds,
                 decode_tokens > 0 ? decode_tokens / result.decode_seconds : 0.0,
                 pipeline->first().backend().threads(),
                 std::string(pipeline->first().backend().name()).c_str());
  }
  return absl::OkStatus();
}

std::string HumanBytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.2f %s", v, units[u]);
}

absl::Status Inspect(const std::vector<std::string>& args) {
  std::string model;
  bool help = false;
  FlagSet flags;
  flags.String("model", &model, "model folder (required)");
  flags.Bool("help", &help, "this list");
  RETURN_IF_ERROR(flags.Parse(args));
  if (help) {
    std::cout << "usage: strata inspect --model DIR\n" << flags.Usage();
    return absl::OkStatus();
  }
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(model));
  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model));
  ASSIGN_OR_RETURN(ModelBytes bytes, MeasureModel(c, *ckpt));
  std::cout << absl::StrFormat(
      "architecture  %s\nlayers        %d\nhidden        %d\nheads         %d (kv %d, head_dim "
      "%d)\n"
      "intermediate  %d\nvocab         %d\ncontext       %d\ndtype         %s\ntied          %s\n",
      c.architecture, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
      c.intermediate_size, c.vocab_size, c.max_position_embeddings, DTypeName(c.torch_dtype),
      c.tie_word_embeddings ? "yes" : "no");
  std::cout << "quantization  " << c.quant.Describe()
            << (c.quant.quantized() ? " (layer bytes as loaded, repacked)" : "") << "\n";
  std::cout << absl::StrFormat("%-28s %14s  %s\n", "part", "bytes", "");
  std::cout << absl::StrFormat("%-28s %14d  %s\n", "model.embed_tokens", bytes.embedding_bytes,
                               HumanBytes(bytes.embedding_bytes));
  for (size_t l = 0; l < bytes.layer_bytes.size(); ++l) {
    std::cout << absl::StrFormat("%-28s %14d  %s\n", absl::StrCat("model.layers.", l),
                                 bytes.layer_bytes[l], HumanBytes(bytes.layer_bytes[l]));
  }
  std::cout << absl::StrFormat("%-28s %14d  %s\n", "model.norm", bytes.final_norm_bytes,
                               HumanBytes(bytes.final_norm_bytes));
  std::cout << absl::StrFormat("%-28s %14d  %s\n",
                               c.tie_word_embeddings ? "lm_head (tied)" : "lm_head",
                               bytes.lm_head_bytes, HumanBytes(bytes.lm_head_bytes));
  std::cout << absl::StrFormat("%-28s %14d  %s\n", "total", bytes.total(),
                               HumanBytes(bytes.total()));
  return absl::OkStatus();
}

// --<method_flag>, --group-size, --desc-act, --asym.
void AddQuantizeFlags(FlagSet* flags, QuantizeSpec* spec, const char* method_flag) {
  flags->String(method_flag, &spec->method,
                "gptq-int4 | gptq-int8 | awq-int4 | fp8 (128x128 block scales) | fp8-tensor | "
                "fp8-channel (compressed-tensors)");
  flags->Int("group-size", &spec->group_size,
             "input columns per scale, a multiple of 32; -1 = per channel (GPTQ) (128)");
  flags->Bool("desc-act", &spec->desc_act, "GPTQ act order (g_idx not monotonic)");
  flags->Bool("sym", &spec->sym, "GPTQ symmetric grid; --sym=false for zero points (true)");
}

absl::Status MakeModelCommand(const std::vector<std::string>& args) {
  ModelSpec spec;
  std::string out;
  int64_t shards = 1, seed = 0, layers = 0, positions = 0;
  bool help = false;
  FlagSet flags;
  flags.String("flavour", &spec.flavour, "llama | mistral | qwen2 | hunyuan-dense (llama)");
  flags.String("size", &spec.size,
               "tiny | 1b | qwen2.5-3b (flavour qwen2) | hy-mt1.5-1.8b (flavour hunyuan-dense) "
               "(tiny)");
  flags.String("dtype", &spec.dtype, "f32 | bf16 | f16 (f32 for tiny, bf16 otherwise)");
  flags.String("init", &spec.init,
               "random | bigram: corpus bigram embedding and head | zeros: sparse files, the "
               "shape without the disk space (random)");
  flags.Int("layers", &layers, "decoder layers; 0 = the size's own (0)");
  flags.Int("positions", &positions, "max_position_embeddings; 0 = the size's own (0)");
  flags.Int("shards", &shards, "number of safetensors shards (1)");
  flags.Int("seed", &seed, "weights seed (0)");
  flags.String("out", &out, "output folder (required)");
  AddQuantizeFlags(&flags, &spec.quant, "quant");
  flags.Bool("help", &help, "this list");
  RETURN_IF_ERROR(flags.Parse(args));
  if (help) {
    std::cout << "usage: strata make-model --out DIR [flags]\n" << flags.Usage();
    return absl::OkStatus();
  }
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  if (shards < 1 || shards > 1000) return absl::InvalidArgumentError("--shards must be 1..1000");
  if (seed < 0) return absl::InvalidArgumentError("--seed must not be negative");
  spec.shards = static_cast<int>(shards);
  spec.seed = static_cast<uint64_t>(seed);
  if (layers < 0 || layers > 1000) return absl::InvalidArgumentError("--layers must be 0..1000");
  spec.layers = static_cast<int>(layers);
  if (positions < 0 || positions > (1 << 20)) {
    return absl::InvalidArgumentError("--positions must be 0..1048576");
  }
  spec.positions = positions;
  RETURN_IF_ERROR(MakeModel(spec, out));
  std::cout << "wrote " << spec.flavour << " " << spec.size << " model"
            << (spec.quant.method.empty() ? "" : " (" + spec.quant.method + ")") << " to " << out
            << "\n";
  return absl::OkStatus();
}

absl::Status QuantizeCommand(const std::vector<std::string>& args) {
  QuantizeSpec spec;
  std::string in, out;
  bool help = false;
  FlagSet flags;
  flags.String("in", &in, "the float checkpoint's folder (required)");
  flags.String("out", &out, "output folder (required)");
  AddQuantizeFlags(&flags, &spec, "method");
  flags.Bool("help", &help, "this list");
  RETURN_IF_ERROR(flags.Parse(args));
  if (help) {
    std::cout << "usage: strata quantize --in DIR --out DIR --method METHOD [flags]\n"
              << flags.Usage();
    return absl::OkStatus();
  }
  if (in.empty()) return absl::InvalidArgumentError("--in is required");
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  if (spec.method.empty()) return absl::InvalidArgumentError("--method is required");
  RETURN_IF_ERROR(QuantizeCheckpoint(in, out, spec));
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(out));
  std::cout << "wrote " << c.quant.Describe() << " checkpoint to " << out << "\n";
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  // gRPC locks absl mutexes on every message; Debian's Abseil is built with
  // lock-order (deadlock) detection on, which records every acquisition in a
  // global graph. It is a debugging aid, and a measurable share of the
  // coordinator's CPU per step; off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  absl::Status status;
  if (command == "generate") {
    status = Generate(args);
  } else if (command == "inspect") {
    status = Inspect(args);
  } else if (command == "make-model") {
    status = MakeModelCommand(args);
  } else if (command == "quantize") {
    status = QuantizeCommand(args);
  } else if (command == "logits") {
    status = LogitsCommand(args);
  } else if (command == "render") {
    status = RenderCommand(args);
  } else if (command == "plan") {
    status = PlanCommand(args);
  } else if (command == "certs") {
    status = CertsCommand(args);
  } else if (command == "client") {
    status = ClientCommand(args);
  } else if (command == "up" || command == "coordinator" || command == "worker" ||
             command == "gateway") {
    InstallShutdownSignals();
    status = command == "up"            ? UpCommand(args)
             : command == "coordinator" ? CoordinatorCommand(args)
             : command == "worker"      ? WorkerCommand(args)
                                        : GatewayCommand(args);
  } else if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  } else {
    std::fprintf(stderr, "strata: unknown command \"%s\"\n%s", command.c_str(), kUsage);
    return 2;
  }
  if (!status.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "strata %s: %s\n", command.c_str(), std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::Main(argc, argv); }
