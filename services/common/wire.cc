#include "services/common/wire.h"

#include <google/protobuf/unknown_field_set.h>

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

absl::Status FindInvalidUtf8(const google::protobuf::Descriptor& descriptor,
                             const std::string& bytes, const std::string& path) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.empty() ? "request" : path, ": not a valid ", descriptor.name(), " message"));
  }
  std::map<int, int> seen;  // field number -> occurrences so far (the index of a repeated one)
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    const int index = seen[f.number()]++;
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* fd = descriptor.FindFieldByNumber(f.number());
    if (fd == nullptr) continue;
    std::string name = path.empty() ? fd->name() : absl::StrCat(path, ".", fd->name());
    if (fd->is_repeated()) absl::StrAppend(&name, "[", index, "]");
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
      const std::string& value = f.length_delimited();
      size_t at = 0;
      if (!unicode::IsValidUtf8(value, &at)) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": not valid UTF-8 (byte ", at, ")"));
      }
    } else if (fd->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      absl::Status st = FindInvalidUtf8(*fd->message_type(), f.length_delimited(), name);
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseRequest(const std::string& bytes, google::protobuf::Message* message) {
  if (message->ParseFromString(bytes)) return absl::OkStatus();
  absl::Status st = FindInvalidUtf8(*message->GetDescriptor(), bytes);
  if (!st.ok()) return st;
  return absl::InvalidArgumentError(
      absl::StrCat("request: not a valid ", message->GetDescriptor()->name(), " message"));
}

absl::Status ParseRequest(const grpc::ByteBuffer& wire, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!wire.Dump(&slices).ok()) return absl::InvalidArgumentError("request: unreadable");
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return ParseRequest(bytes, message);
}

grpc::ByteBuffer Serialize(const google::protobuf::Message& message) {
  const std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace strata
