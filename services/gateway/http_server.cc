#include "services/gateway/http_server.h"

#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <deque>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "services/common/server.h"
#include "services/gateway/gateway_service.h"
#include "services/gateway/request_group.h"

namespace strata {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using nlohmann::json;
using openai::Dump;

constexpr auto kIdleTimeout = std::chrono::seconds(60);
constexpr size_t kMaxHeaderBytes = 16 << 10;

std::string NewId(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[25];
  std::snprintf(hex, sizeof(hex), "%016llx%08x", static_cast<unsigned long long>(rng()),
                static_cast<unsigned>(rng()));
  return absl::StrCat(prefix, hex);
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  GatewayService* service = nullptr;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::optional<ssl::context> tls;
  std::vector<std::thread> threads;
  std::string address;
  bool stopped = false;

  void Accept();
};

namespace {

// One connection. Every member is touched only on the connection's strand
// (the socket's executor); RequestStream callbacks post onto it.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, HttpServer::Impl* server) : stream_(std::move(stream)), server_(server) {}
  ~Session() {
    if (request_ != nullptr) request_->Close();
  }

  void Start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      Read();
    } else {
      beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (!ec) self->Read();
                              });
    }
  }

 private:
  using Self = Session<Stream>;

  void Read() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(server_->options.max_body));
    parser_->header_limit(kMaxHeaderBytes);
    beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return SendError(
          {413,
           absl::StrCat("body: larger than this server's limit of ", server_->options.max_body,
                        " bytes (set from the model's context)"),
           "invalid_request_error", "body", "request_too_large"});
    }
    if (ec) return Close();  // the client left, timed out, or sent no HTTP
    request_msg_ = parser_->release();
    keep_alive_ = request_msg_.keep_alive();
    try {
      Handle();
    } catch (const std::exception& e) {
      // A bug, never a dead gateway: the request fails, the server goes on.
      Log(absl::StrCat("HTTP ", std::string(request_msg_.target()), ": ", e.what()));
      keep_alive_ = false;
      SendError({500, "internal error", "server_error", "", ""});
    }
  }

  void Handle() {
    const std::string target(request_msg_.target());
    const std::string path = target.substr(0, target.find('?'));
    const http::verb verb = request_msg_.method();
    if (path == "/health") {
      if (server_->service->draining()) {
        return Send(http::status::service_unavailable, json::object(), "5");
      }
      return Send(http::status::ok, json::object());
    }
    if (path == "/version") {
      return Send(http::status::ok, {{"version", server_->options.version}});
    }
    const auto auth = request_msg_.find(http::field::authorization);
    const absl::Status authorized = server_->service->AuthenticateHeader(
        auth == request_msg_.end() ? absl::string_view()
                                   : absl::string_view(auth->value().data(), auth->value().size()));
    if (!authorized.ok()) {
      server_->service->Count("unauthenticated");
      return SendError(
          {401, std::string(authorized.message()), "authentication_error", "", "invalid_api_key"});
    }
    const bool post = verb == http::verb::post, get = verb == http::verb::get;
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!post) return MethodNotAllowed("POST");
      return Generate(path == "/v1/chat/completions");
    }
    if (path == "/v1/models") {
      if (!get) return MethodNotAllowed("GET");
      return Send(http::status::ok, openai::ModelList(server_->options.model));
    }
    if (absl::StartsWith(path, "/v1/models/")) {
      if (!get) return MethodNotAllowed("GET");
      const std::string id = path.substr(11);
      if (id != server_->options.model.id) {
        return SendError({404, "model: \"" + id + "\" is not served here", "invalid_request_error",
                          "model", "model_not_found"});
      }
      return Send(http::status::ok, openai::ModelObject(server_->options.model));
    }
    if (path == "/tokenize" || path == "/detokenize") {
      if (!post) return MethodNotAllowed("POST");
      return path == "/tokenize" ? Tokenize() : Detokenize();
    }
    return SendError({404, "path: no route " + path, "invalid_request_error", "", "not_found"});
  }

  void MethodNotAllowed(const char* allow) {
    SendError({405,
               std::string("method: ") + std::string(request_msg_.method_string()) +
                   " is not allowed here; use " + allow,
               "invalid_request_error", "", "method_not_allowed"});
  }

  // The request's body as a JSON object; false after answering 400.
  bool ParseObject(json* body) {
    try {
      *body = json::parse(request_msg_.body());
    } catch (const json::exception& e) {
      SendError({400, std::string("body: not valid JSON: ") + e.what(), "invalid_request_error",
                 "body", ""});
      return false;
    }
    if (!body->is_object()) {
      SendError({400, "body: must be a JSON object", "invalid_request_error", "body", ""});
      return false;
    }
    return true;
  }

  // POST /tokenize: {"prompt": "..."} or {"messages": [...]}, vLLM's shape.
  void Tokenize() {
    json body;
    if (!ParseObject(&body)) return;
    v1::GenerateRequest r;
    if (body.contains("prompt") && body["prompt"].is_string()) {
      r.set_prompt(body["prompt"].get<std::string>());
    } else if (body.contains("messages")) {
      json chat = body;
      chat["model"] = server_->options.model.id;
      const openai::ParseResult p = openai::ParseRequest(Dump(chat), true, server_->options.model);
      if (!p.ok) return SendError(p.error);
      r = p.request.generate;
    } else {
      return SendError(
          {400, "prompt: required: a string (or messages)", "invalid_request_error", "prompt", ""});
    }
    if (body.contains("add_special_tokens")) {
      if (!body["add_special_tokens"].is_boolean()) {
        return SendError({400, "add_special_tokens: must be true or false", "invalid_request_error",
                          "add_special_tokens", ""});
      }
      r.set_add_bos(body["add_special_tokens"].get<bool>());
    }
    r.set_max_tokens(1);
    auto submit = ValidateAndTokenize(r, server_->service->tokenizer(), server_->service->model());
    if (!submit.ok()) {
      return SendError(openai::ErrorFromStatus(static_cast<int>(submit.status().code()),
                                               std::string(submit.status().message())));
    }
    std::vector<int32_t> ids(submit->prompt_ids().begin(), submit->prompt_ids().end());
    Send(http::status::ok, {{"count", ids.size()},
                            {"max_model_len", server_->options.model.context},
                            {"tokens", ids}});
  }

  // POST /detokenize: {"tokens": [...]} -> {"prompt": "..."}.
  void Detokenize() {
    json body;
    if (!ParseObject(&body)) return;
    if (!body.contains("tokens") || !body["tokens"].is_array()) {
      return SendError(
          {400, "tokens: required: an array of token ids", "invalid_request_error", "tokens", ""});
    }
    const Tokenizer& tok = server_->service->tokenizer();
    std::vector<int32_t> ids;
    for (size_t i = 0; i < body["tokens"].size(); ++i) {
      const json& t = body["tokens"][i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() >= server_->service->model().vocab_size) {
        return SendError({400,
                          absl::StrCat("tokens[", i, "]: must be a token id in [0, ",
                                       server_->service->model().vocab_size, ")"),
                          "invalid_request_error", absl::StrCat("tokens[", i, "]"), ""});
      }
      ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    Send(http::status::ok, {{"prompt", tok.Decode(ids)}});
  }

  void Generate(bool chat) {
    openai::ParseResult p = openai::ParseRequest(request_msg_.body(), chat, server_->options.model);
    if (!p.ok) {
      server_->service->Count("invalid");
      return SendError(p.error);
    }
    gen_ = std::move(p.request);
    openai::Completion blank;
    blank.id = NewId(chat ? "chatcmpl-" : "cmpl-");
    blank.model = server_->options.model.id;
    blank.fingerprint = openai::Fingerprint(server_->options.version, 0);
    blank.created = UnixNow();
    choices_.assign(gen_.prompts.size() * gen_.n(), blank);
    echoed_.assign(choices_.size(), false);
    for (size_t i = 0; i < choices_.size(); ++i) choices_[i].index = static_cast<int>(i);
    std::vector<std::string> labels;
    if (gen_.prompts.size() > 1) {
      for (size_t i = 0; i < gen_.prompts.size(); ++i)
        labels.push_back(absl::StrCat("prompt[", i, "]"));
    }

    streamed_header_ = false;
    std::weak_ptr<Self> weak = this->shared_from_this();
    request_ = std::make_unique<RequestGroup>(
        server_->service,
        [weak](int index, const v1::GenerateResponse& r) {
          if (auto self = weak.lock()) {
            net::post(self->stream_.get_executor(),
                      [self, index, r] { self->OnResponse(index, r); });
          }
        },
        [weak](const grpc::Status& st) {
          if (auto self = weak.lock()) {
            net::post(self->stream_.get_executor(), [self, st] { self->OnEnd(st); });
          }
        });
    // Long generations must not hit the idle timeout; a client that leaves
    // is noticed by the probe read.
    beast::get_lowest_layer(stream_).expires_never();
    Probe();
    request_->Begin(gen_.prompts, labels);
  }

  void OnResponse(int index, const v1::GenerateResponse& r) {
    if (request_ == nullptr) return;
    openai::Completion& c = choices_[index];
    if (r.has_delta()) {
      const std::vector<int32_t> ids(r.delta().token_ids().begin(), r.delta().token_ids().end());
      c.completion_ids.insert(c.completion_ids.end(), ids.begin(), ids.end());
      c.text += r.delta().text();
      SetEpoch(c, r.delta().map_epoch());
      // The prompt's log-probabilities (echo): the first token has none.
      if (r.delta().prompt_logprobs_size() > 0) {
        const std::vector<int32_t>& prompt = request_->prompt_ids(index);
        if (c.prompt_logprobs.empty()) {
          c.prompt_logprobs.push_back(Entry(prompt[0], nullptr));
        }
        for (const v1::TokenLogprobs& lp : r.delta().prompt_logprobs()) {
          const size_t at = c.prompt_logprobs.size();
          if (at < prompt.size()) c.prompt_logprobs.push_back(Entry(prompt[at], &lp));
        }
      }
      // Each token's log-probabilities with its text (its bytes).
      std::vector<openai::LogprobEntry> entries;
      for (int i = 0; i < r.delta().logprobs_size() && i < static_cast<int>(ids.size()); ++i) {
        entries.push_back(Entry(ids[i], &r.delta().logprobs(i)));
      }
      c.logprobs.insert(c.logprobs.end(), entries.begin(), entries.end());
      if (gen_.stream && (!ids.empty() || !r.delta().text().empty())) {
        StartStream();
        Echo(index);
        Event(openai::ChunkBody(gen_, c, r.delta().text(), ids, v1::FINISH_REASON_UNSPECIFIED,
                                false, &entries));
      }
    } else if (r.has_finished()) {
      const v1::Finished& f = r.finished();
      c.finish = f.reason();
      c.prompt_ids = request_->prompt_ids(index);
      c.prompt_tokens = static_cast<int>(f.prompt_tokens());
      c.completion_tokens = static_cast<int>(f.completion_tokens());
      c.seed = f.seed();
      c.tool_calls.assign(f.tool_calls().begin(), f.tool_calls().end());
      SetEpoch(c, f.map_epoch());
      if (gen_.stream) {
        StartStream();
        Echo(index);
        if (!c.tool_calls.empty()) Event(openai::ToolCallsChunk(gen_, c));
        Event(openai::ChunkBody(gen_, c, "", {}, c.finish));
      }
    }
  }

  // A token's log-probability entry with its text; `lp` null: none (null).
  openai::LogprobEntry Entry(int32_t id, const v1::TokenLogprobs* lp) const {
    const Tokenizer& tok = server_->service->tokenizer();
    const std::string bytes = tok.TokenBytes(id);
    openai::LogprobEntry e{openai::TokenText(bytes), bytes.size(), 0, {}};
    if (lp == nullptr) {
      e.none = true;
      return e;
    }
    e.logprob = lp->logprob();
    for (const v1::TokenLogprob& alt : lp->top()) {
      e.top.emplace_back(openai::TokenText(tok.TokenBytes(alt.token_id())), alt.logprob());
    }
    return e;
  }

  // Streamed completions with echo: the prompt as choice `index`'s first
  // chunk, with its log-probabilities when asked (so it waits for them).
  void Echo(int index) {
    if (!gen_.echo || gen_.chat || echoed_[index]) return;
    echoed_[index] = true;
    openai::Completion& c = choices_[index];
    const std::string completion = c.text;  // the text offsets count from the echo
    c.text = EchoText(index);
    Event(openai::ChunkBody(gen_, c, c.text, {}, v1::FINISH_REASON_UNSPECIFIED, false,
                            &c.prompt_logprobs));
    c.text += completion;
  }

  void SetEpoch(openai::Completion& c, uint64_t epoch) {
    if (epoch == 0 || epoch == c.map_epoch) return;
    c.map_epoch = epoch;
    c.fingerprint = openai::Fingerprint(server_->options.version, epoch);
  }

  void OnEnd(const grpc::Status& st) {
    if (request_ == nullptr) return;
    // The prompts' ids, for echo, before the group goes.
    std::vector<std::string> echoes;
    if (gen_.echo && !gen_.stream && st.ok()) {
      for (size_t i = 0; i < choices_.size(); ++i) echoes.push_back(EchoText(static_cast<int>(i)));
    }
    request_->Close();
    request_.reset();
    if (!st.ok()) {
      const openai::Error e = openai::ErrorFromStatus(st.error_code(), st.error_message());
      if (gen_.stream && streamed_header_) {
        Event(openai::ErrorBody(e));  // the stream has begun: the error is its last event
      } else if (st.error_code() == grpc::StatusCode::CANCELLED && client_gone_) {
        return Close();
      } else {
        return SendError(e);
      }
    } else if (!gen_.stream) {
      for (size_t i = 0; i < echoes.size(); ++i) {
        openai::Completion& c = choices_[i];
        c.text = echoes[i] + c.text;
        c.logprobs.insert(c.logprobs.begin(), c.prompt_logprobs.begin(), c.prompt_logprobs.end());
      }
      return Send(http::status::ok, openai::CompletionBody(gen_, choices_));
    }
    if (gen_.stream) {
      StartStream();
      if (st.ok() && gen_.include_usage) Event(openai::UsageChunk(gen_, choices_));
      sse_.push_back("data: [DONE]\n\n");
      sse_done_ = true;
      WriteSse();
    }
  }

  // Choice `index`'s prompt as text: as sent, or its token ids decoded.
  std::string EchoText(int index) const {
    const v1::GenerateRequest& prompt = gen_.prompts[index / gen_.n()];
    if (prompt.has_prompt()) return prompt.prompt();
    return server_->service->tokenizer().Decode(request_->prompt_ids(index));
  }

  // SSE: the response header (chunked), then one chunk per event.
  void StartStream() {
    if (streamed_header_) return;
    streamed_header_ = true;
    sse_res_.emplace(http::status::ok, request_msg_.version());
    sse_res_->set(http::field::content_type, "text/event-stream");
    sse_res_->set(http::field::cache_control, "no-cache");
    sse_res_->keep_alive(keep_alive_);
    sse_res_->chunked(true);
    sse_sr_.emplace(*sse_res_);
    writing_ = true;
    http::async_write_header(stream_, *sse_sr_,
                             [self = this->shared_from_this()](beast::error_code ec, size_t) {
                               self->OnSseWritten(ec, /*header=*/true);
                             });
    for (openai::Completion& c : choices_) {
      if (gen_.chat) Event(openai::ChunkBody(gen_, c, "", {}, v1::FINISH_REASON_UNSPECIFIED, true));
    }
  }

  void Event(const json& body) {
    sse_.push_back("data: " + Dump(body) + "\n\n");
    WriteSse();
  }

  void WriteSse() {
    if (writing_ || sse_.empty()) {
      if (!writing_ && sse_.empty() && sse_done_) FinishSse();
      return;
    }
    writing_ = true;
    net::async_write(stream_, http::make_chunk(net::buffer(sse_.front())),
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       self->OnSseWritten(ec, /*header=*/false);
                     });
  }

  void OnSseWritten(beast::error_code ec, bool header) {
    writing_ = false;
    if (!header) sse_.pop_front();
    if (ec) {
      client_gone_ = true;
      if (request_ != nullptr) request_->Cancel("cancelled", "the client went away");
      return Close();
    }
    WriteSse();
  }

  void FinishSse() {
    sse_done_ = false;
    writing_ = true;
    net::async_write(stream_, http::make_chunk_last(),
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       self->sse_res_.reset();
                       self->sse_sr_.reset();
                       self->streamed_header_ = false;
                       if (ec || !self->keep_alive_) return self->Close();
                       self->NextRequest();
                     });
  }

  // A read while the request runs: it ends with an error when the client
  // disconnects (then the request is cancelled); bytes of a pipelined next
  // request are kept for it.
  void Probe() {
    probing_ = true;
    stream_.async_read_some(net::buffer(probe_),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              self->OnProbe(ec, n);
                            });
  }

  void OnProbe(beast::error_code ec, size_t n) {
    probing_ = false;
    if (n > 0) {
      buffer_.commit(net::buffer_copy(buffer_.prepare(n), net::buffer(probe_, n)));
    }
    if (ec == net::error::operation_aborted && read_after_probe_) {
      read_after_probe_ = false;
      return Read();
    }
    if (ec) {
      if (request_ != nullptr) {
        client_gone_ = true;
        request_->Cancel("cancelled", "the client went away");
      }
      return;
    }
    if (read_after_probe_) {
      read_after_probe_ = false;
      return Read();
    }
    Probe();
  }

  // After a response: the next request, once the probe read is out of the way.
  void NextRequest() {
    if (probing_) {
      read_after_probe_ = true;
      beast::error_code ignored;
      beast::get_lowest_layer(stream_).socket().cancel(ignored);
      return;
    }
    Read();
  }

  void Send(http::status status, const json& body, const char* retry_after = nullptr) {
    auto res = std::make_shared<http::response<http::string_body>>(status, request_msg_.version());
    res->set(http::field::content_type, "application/json");
    if (retry_after != nullptr) res->set(http::field::retry_after, retry_after);
    res->keep_alive(keep_alive_);
    res->body() = Dump(body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec || !self->keep_alive_) return self->Close();
                        self->NextRequest();
                      });
  }

  void SendError(const openai::Error& e) {
    Send(static_cast<http::status>(e.status), openai::ErrorBody(e),
         e.status == 503 ? "1" : nullptr);
  }

  void Close() {
    if (request_ != nullptr) {
      request_->Close();
      request_.reset();
    }
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  Stream stream_;
  HttpServer::Impl* const server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_msg_;
  bool keep_alive_ = false;
  // The generation in progress.
  openai::Request gen_;
  std::vector<openai::Completion> choices_;  // by index
  std::vector<bool> echoed_;                 // streamed: the echo chunk went out
  std::unique_ptr<RequestGroup> request_;
  bool client_gone_ = false;
  // SSE output.
  std::optional<http::response<http::empty_body>> sse_res_;
  std::optional<http::response_serializer<http::empty_body>> sse_sr_;
  std::deque<std::string> sse_;
  bool streamed_header_ = false, writing_ = false, sse_done_ = false;
  // The disconnect probe.
  char probe_[512];
  bool probing_ = false, read_after_probe_ = false;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!stopped) Accept();
      return;
    }
    // Each SSE event is a small write that must leave at once (no Nagle).
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (tls.has_value()) {
      std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
          beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls), this)
          ->Start();
    } else {
      std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), this)
          ->Start();
    }
    Accept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

const std::string& HttpServer::address() const { return impl_->address; }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              GatewayService* service) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->service = service;
  const size_t colon = options.listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError("--http-listen: expected HOST:PORT, got " + options.listen);
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  beast::error_code ec;
  const auto addr = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return absl::InvalidArgumentError("--http-listen: \"" + host + "\" is not an IP address");
  const tcp::endpoint endpoint(addr, static_cast<unsigned short>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);  // no SO_REUSEPORT: a taken port is an error
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("--http-listen: cannot bind ", options.listen, " (", ec.message(), ")"));
  }
  if (options.security != nullptr && options.security->secure()) {
    impl->tls.emplace(ssl::context::tls_server);
    impl->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1);
    impl->tls->use_certificate_chain_file(options.security->files().cert, ec);
    if (!ec) impl->tls->use_private_key_file(options.security->files().key, ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError("--public-tls-cert/key: " + ec.message());
  }
  impl->address = absl::StrCat(HostOf(options.listen), ":", impl->acceptor.local_endpoint().port());
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([io = &impl->ioc] { io->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Shutdown() {
  if (impl_ == nullptr || impl_->stopped) return;
  impl_->stopped = true;
  net::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  impl_->ioc.stop();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace strata
