// A simulated accelerator (`--device sim:NAME`): a Backend that computes
// nothing and takes the time a device of the table (runtime/device_table.h)
// would.
//
// Memory is accounted as the CUDA backend does it: every weight in the
// activation dtype (bf16 for f32 and bf16 checkpoints, f16 for f16 ones),
// the KV blocks and workspaces the stage allocates, the cuBLASLt workspace and
// the logits and attention scratch; past the limit, the same
// RESOURCE_EXHAUSTED naming what did not fit. Buffers are address space
// only (PROT_NONE, no memory behind it), so dozens of simulated 80 GB devices
// fit one small machine, and a weight is never read (a checkpoint made with
// `make-model --init zeros` costs no disk).
//
// Time: every op adds the bytes it would move and the FLOPs it would do
// (weights and activations, the KV it reads and writes); the op that ends a
// step (Download, Logits, Argmax) sleeps until the step's start plus bytes /
// bandwidth + FLOPs / FLOP rate: to a deadline, so the host work of the stage
// overlaps the modelled time instead of adding to it.
//
// Output: a token id is a fixed hash of the id or hidden-state signature its
// row came from and its position, inside the vocabulary. The first stage
// signs each row with its token id; a hidden state carries its row's
// signature in its first element to the next stage; the last stage's logits
// are 0 except 8 at the hashed id (Argmax returns that id). A sequence is
// thus a deterministic function of its prompt (and, when sampled, its seed).
//
// Hops: like CUDA devices of one host, simulated devices of one host join the
// epoch's peer group (runtime/backend/socket_link.h stands in for NCCL), so
// the gRPC step carries only the header; the group moves each row's
// signature, and the sending step takes the row's bytes at a PCIe link's rate.
// Each simulated device has its own UUID ("SIM-...").
#ifndef STRATA_RUNTIME_BACKEND_SIM_SIM_BACKEND_H_
#define STRATA_RUNTIME_BACKEND_SIM_SIM_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"

namespace strata {

// "sim:NAME" for a row of the device table, or "sim:custom" with
// options.sim_* set (which also override a row's figures when set).
absl::StatusOr<std::unique_ptr<Backend>> MakeSimBackend(const BackendOptions& options,
                                                        DType weights_dtype);

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_SIM_SIM_BACKEND_H_
