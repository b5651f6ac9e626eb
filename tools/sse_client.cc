#include "tools/sse_client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace strata {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

SseReply PostSse(const std::string& address, const std::string& target, const std::string& body,
                 const std::string& api_key, const SseHandler& on_event) {
  SseReply reply;
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  const size_t colon = address.rfind(':');
  beast::error_code ec;
  stream.connect(resolver.resolve(address.substr(0, colon), address.substr(colon + 1)), ec);
  if (ec) return reply;
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, address);
  req.set(http::field::content_type, "application/json");
  if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req, ec);
  if (ec) return reply;
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  http::read_header(stream, buffer, parser, ec);
  if (ec) return reply;
  reply.status = parser.get().result_int();
  std::string pending;
  char chunk[4096];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    http::read_some(stream, buffer, parser, ec);  // returns with what arrived
    if (ec == http::error::need_buffer) ec = {};
    if (ec) break;
    const auto at = std::chrono::steady_clock::now();
    pending.append(chunk, sizeof(chunk) - parser.get().body().size);
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      if (event == "data: [DONE]") {
        reply.done = true;
        continue;
      }
      const nlohmann::json e = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (e.is_discarded()) continue;
      if (!on_event(e, at)) {
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        return reply;
      }
    }
  }
  return reply;
}

}  // namespace strata
