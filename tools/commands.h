// The `strata` subcommands that run or talk to a cluster. Each takes the
// arguments after its name and returns a status (INVALID_ARGUMENT: bad flags).
#ifndef STRATA_TOOLS_COMMANDS_H_
#define STRATA_TOOLS_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata {

absl::Status CoordinatorCommand(const std::vector<std::string>& args);
absl::Status WorkerCommand(const std::vector<std::string>& args);
absl::Status GatewayCommand(const std::vector<std::string>& args);
absl::Status UpCommand(const std::vector<std::string>& args);
absl::Status ClientCommand(const std::vector<std::string>& args);
absl::Status PlanCommand(const std::vector<std::string>& args);
absl::Status CertsCommand(const std::vector<std::string>& args);
absl::Status LogitsCommand(const std::vector<std::string>& args);
absl::Status RenderCommand(const std::vector<std::string>& args);

}  // namespace strata

#endif  // STRATA_TOOLS_COMMANDS_H_
