#include "tools/client.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "services/common/server.h"
#include "strata/v1/generation.grpc.pb.h"

namespace strata {

absl::Status StreamCompletion(const ClientOptions& options, std::FILE* out) {
  std::shared_ptr<grpc::Channel> channel;
  if (options.tls_ca.empty()) {
    channel = Dial(options.address);
  } else {
    std::ifstream f(options.tls_ca);
    std::stringstream ca;
    ca << f.rdbuf();
    if (!f)
      return absl::InvalidArgumentError(absl::StrCat("--tls-ca: cannot read ", options.tls_ca));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca.str();
    channel = grpc::CreateChannel(options.address, grpc::SslCredentials(ssl));
  }
  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  if (!options.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + options.api_key);
  if (options.timeout_ms > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(options.timeout_ms));
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto reader = stub->Generate(&ctx, options.request);
  if (options.echo_prompt && options.request.has_prompt()) {
    std::fputs(options.request.prompt().c_str(), out);
    std::fflush(out);
  }
  v1::GenerateResponse response;
  v1::Finished finished;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      const std::string& text = response.delta().text();
      std::fwrite(text.data(), 1, text.size(), out);
      std::fflush(out);
    } else if (response.has_finished()) {
      finished = response.finished();
    }
  }
  std::fputc('\n', out);
  std::fflush(out);
  grpc::Status st = reader->Finish();
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat("gateway ", options.address, ": ", st.error_message()));
  }
  if (options.stats) {
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double decode = total - finished.time_to_first_token_seconds();
    std::fprintf(stderr,
                 "strata: %u prompt tokens, %u generated (%s); time to first token %.1f ms, "
                 "%.1f tokens/s after it; seed %llu\n",
                 finished.prompt_tokens(), finished.completion_tokens(),
                 v1::FinishReason_Name(finished.reason()).c_str(),
                 finished.time_to_first_token_seconds() * 1000,
                 finished.completion_tokens() > 1 && decode > 0
                     ? (finished.completion_tokens() - 1) / decode
                     : 0.0,
                 static_cast<unsigned long long>(finished.seed()));
  }
  return absl::OkStatus();
}

}  // namespace strata
