// Parsing requests that arrive as raw bytes (gRPC raw callback methods), so
// that a bad request is refused with a message naming its field. Protobuf
// refuses a proto3 string field holding invalid UTF-8 without saying which
// (gRPC then answers INTERNAL with no message); here the bytes are walked
// field by field against the message's descriptor to name it.
#ifndef STRATA_SERVICES_COMMON_WIRE_H_
#define STRATA_SERVICES_COMMON_WIRE_H_

#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>

#include <string>

#include "absl/status/status.h"

namespace strata {

// Parses `wire` into `message`: INVALID_ARGUMENT naming the field for
// invalid UTF-8 ("messages.messages[1].content: not valid UTF-8 (byte 5)"),
// or saying the bytes are not a `message` at all.
absl::Status ParseRequest(const grpc::ByteBuffer& wire, google::protobuf::Message* message);
absl::Status ParseRequest(const std::string& bytes, google::protobuf::Message* message);

// The first string field in `bytes` (a serialized `descriptor` message)
// that is not valid UTF-8, as an INVALID_ARGUMENT naming it; OK if none.
absl::Status FindInvalidUtf8(const google::protobuf::Descriptor& descriptor,
                             const std::string& bytes, const std::string& path = "");

// `message` as a ByteBuffer, for raw methods' replies.
grpc::ByteBuffer Serialize(const google::protobuf::Message& message);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_WIRE_H_
