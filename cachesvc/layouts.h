// cachesvc/layouts.h: the model layouts each tenant's engines have registered, by fingerprint.
//
// BlockService adds a layout when an engine registers it (RegisterEngine); SessionService reads
// it when a session is opened for a fingerprint, to learn the layout's block size (a session's
// keys are cut in blocks of layout.block_tokens tokens). Per tenant: a fingerprint one tenant
// registered is unknown to every other, like its engines.
//
// Held in memory only, like the engines: after a restart a tenant's engines register again before
// new sessions can be opened for their layout (sessions already stored keep their block size and
// need no layout). Layouts are never removed; there are as many as distinct (tenant, layout)
// pairs ever registered, each a few hundred bytes.
//
// Thread-safe (one mutex; taken once per RegisterEngine and once per OpenSession).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "base/mutex.h"
#include "proto/layout.h"

namespace cachesvc {

class KnownLayouts {
 public:
  // Records that an engine of `tenant` registered `layout` (already validated).
  void Add(const std::string& tenant, const ModelLayout& layout) {
    const std::uint64_t fingerprint = layout.Fingerprint();
    MutexLock lock(&mu_);
    layouts_.insert_or_assign(std::make_pair(tenant, fingerprint), layout);
  }

  // The layout of `fingerprint` an engine of `tenant` registered, or nullopt.
  [[nodiscard]] std::optional<ModelLayout> Find(const std::string& tenant,
                                                std::uint64_t fingerprint) const {
    MutexLock lock(&mu_);
    auto it = layouts_.find(std::make_pair(tenant, fingerprint));
    if (it == layouts_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable Mutex mu_;
  std::map<std::pair<std::string, std::uint64_t>, ModelLayout> layouts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc
