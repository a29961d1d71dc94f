// client/cachectl/completion.h: shell completion scripts for cachectl, generated from the CLI11
// command tree itself, so every command and flag added to cachectl completes without a second
// list to keep in step. zsh gets the bash function through bashcompinit.
//
//   source <(cachectl completion bash)        # or save it under /etc/bash_completion.d/
//   source <(cachectl completion zsh)
#pragma once

#include <string>

#include "base/cli11.h"

namespace cachesvc::cachectl {

std::string BashCompletion(const CLI::App& app);
std::string ZshCompletion(const CLI::App& app);

}  // namespace cachesvc::cachectl
