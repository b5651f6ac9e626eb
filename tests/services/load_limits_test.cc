// What a worker refuses in a Load before it allocates anything: each limit
// named with its value and range, and a KV cache past the worker's memory.
#include "gtest/gtest.h"
#include "runtime/config.h"
#include "services/worker/worker_service.h"

namespace strata {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 512;
  c.max_position_embeddings = 2048;
  return c;
}

v1::LoadRequest Good() {
  v1::LoadRequest r;
  r.set_epoch(1);
  r.set_layer_begin(0);
  r.set_layer_end(4);
  r.set_max_sequences(16);
  r.set_max_context(1024);
  r.set_max_batch_tokens(512);
  return r;
}

std::string Refusal(const v1::LoadRequest& r, int64_t capacity = int64_t{1} << 30) {
  const absl::Status st = CheckLoadLimits(r, Config(), capacity, 0);
  return st.ok() ? "" : std::string(st.message());
}

TEST(LoadLimitsTest, AbsurdValuesAreRefusedByName) {
  EXPECT_EQ(Refusal(Good()), "");
  v1::LoadRequest r = Good();
  r.set_max_sequences(int64_t{1} << 56);
  EXPECT_EQ(Refusal(r), "Worker.Load: max_sequences 72057594037927936 is outside [1, 65536]");
  r = Good();
  r.set_max_context(4096);
  EXPECT_EQ(Refusal(r), "Worker.Load: max_context 4096 is outside [1, 2048]");
  r = Good();
  r.set_layer_end(5);
  EXPECT_EQ(Refusal(r), "Worker.Load: layer_end 5 is outside [1, 4]");
  r = Good();
  r.set_layer_begin(-1);
  EXPECT_EQ(Refusal(r), "Worker.Load: layer_begin -1 is outside [0, 3]");
  r = Good();
  r.set_epoch(0);
  EXPECT_EQ(Refusal(r), "Worker.Load: epoch must be positive");
  r = Good();
  r.set_max_batch_tokens(0);
  EXPECT_NE(Refusal(r).find("max_batch_tokens 0"), std::string::npos);
  r = Good();
  r.set_threads(100000);
  EXPECT_NE(Refusal(r).find("threads 100000"), std::string::npos);
  r = Good();
  r.set_peer_group_id("x");
  r.set_peer_rank(3);
  r.set_peer_group_size(2);
  EXPECT_NE(Refusal(r).find("do not form a group"), std::string::npos);
}

// 2^16 sequences x 2048 tokens x 4 layers x 2 x 32 x 4 bytes = 128 GiB: past
// any capacity here, and refused by size, not by an allocation that fails.
TEST(LoadLimitsTest, AKvCachePastTheWorkersMemoryIsResourceExhausted) {
  v1::LoadRequest r = Good();
  r.set_max_sequences(65536);
  r.set_max_context(2048);
  const absl::Status st = CheckLoadLimits(r, Config(), int64_t{8} << 30, int64_t{1} << 30);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("needs 131072 MiB of KV cache"), std::string::npos) << st;
  EXPECT_NE(st.message().find("may use 7168 MiB"), std::string::npos) << st;
  EXPECT_TRUE(CheckLoadLimits(Good(), Config(), int64_t{8} << 30, int64_t{1} << 30).ok());
}

}  // namespace
}  // namespace strata
