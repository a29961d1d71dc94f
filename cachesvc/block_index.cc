#include "cachesvc/block_index.h"

#include <bit>
#include <cstring>

namespace cachesvc {

BlockIndex::BlockIndex(unsigned shards)
    : mask_(std::bit_ceil(shards == 0 ? 1u : shards) - 1),
      shards_(std::make_unique<Shard[]>(mask_ + 1)) {}

BlockIndex::Shard& BlockIndex::ShardFor(const BlockKey& key) const {
  // Keys are hashes already: their first bytes spread shards evenly.
  std::uint32_t h;
  std::memcpy(&h, key.bytes.data(), sizeof(h));
  return shards_[h & mask_];
}

BlockEntry* BlockIndex::Shard::Find(const BlockKey& key) {
  auto it = ids.find(key);
  return it == ids.end() ? nullptr : &At(it->second);
}

BlockEntry& BlockIndex::Shard::FindOrAdd(const BlockKey& key, const BlockEntry& fresh,
                                         bool* added) {
  auto [it, inserted] = ids.try_emplace(key, 0);
  if (added != nullptr) *added = inserted;
  if (!inserted) return At(it->second);
  std::uint32_t id;
  if (!free_ids.empty()) {
    id = free_ids.back();
    free_ids.pop_back();
  } else {
    id = next_id++;
    if (id / kChunkEntries == chunks.size()) {
      chunks.push_back(std::make_unique<BlockEntry[]>(kChunkEntries));
    }
  }
  it->second = id;
  BlockEntry& e = At(id);
  e = fresh;
  return e;
}

void BlockIndex::Shard::Remove(const BlockKey& key) {
  auto it = ids.find(key);
  if (it == ids.end()) return;
  free_ids.push_back(it->second);
  ids.erase(it);
}

std::optional<BlockEntry> BlockIndex::Get(const BlockKey& key) const {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const BlockEntry* e = s.Find(key);
  if (e == nullptr) return std::nullopt;
  return *e;
}

void BlockIndex::Reserve(std::size_t entries) {
  const std::size_t per_shard = entries / (mask_ + 1) + 1;
  for (unsigned i = 0; i <= mask_; ++i) {
    MutexLock lock(&shards_[i].mu);
    shards_[i].ids.reserve(per_shard);
  }
}

TierMask BlockIndex::Tiers(const BlockKey& key) const {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const BlockEntry* e = s.Find(key);
  return e == nullptr ? TierMask{0} : e->tiers;
}

bool BlockIndex::Contains(const BlockKey& key) const {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  return s.ids.contains(key);
}

void BlockIndex::AddCopy(const BlockKey& key, tiers::TierKind kind, const TierCopy& copy,
                         const BlockEntry& fresh) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  bool added = false;
  BlockEntry& e = s.FindOrAdd(key, fresh, &added);
  if (added) e.tiers = 0;
  e.SetCopy(kind, copy);
  e.tiers |= TierBit(kind);
}

std::optional<TierCopy> BlockIndex::RemoveCopy(const BlockKey& key, tiers::TierKind kind) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  BlockEntry* e = s.Find(key);
  if (e == nullptr || !e->In(kind)) return std::nullopt;
  const TierCopy copy = e->Copy(kind);
  e->tiers &= static_cast<TierMask>(~TierBit(kind));
  e->SetCopy(kind, TierCopy{});
  if (Unused(*e)) s.Remove(key);
  return copy;
}

TierMask BlockIndex::TakeCopy(const BlockKey& key, tiers::TierKind kind) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  BlockEntry* e = s.Find(key);
  if (e == nullptr) return 0;
  e->tiers &= static_cast<TierMask>(~TierBit(kind));
  e->SetCopy(kind, TierCopy{});
  return e->tiers;
}

void BlockIndex::EraseIfUnused(const BlockKey& key) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  BlockEntry* e = s.Find(key);
  if (e != nullptr && Unused(*e)) s.Remove(key);
}

bool BlockIndex::Update(const BlockKey& key, const std::function<void(BlockEntry&)>& fn) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  BlockEntry* e = s.Find(key);
  if (e == nullptr) return false;
  fn(*e);
  if (Unused(*e)) s.Remove(key);
  return true;
}

std::optional<BlockEntry> BlockIndex::Erase(const BlockKey& key) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  BlockEntry* e = s.Find(key);
  if (e == nullptr) return std::nullopt;
  const BlockEntry copy = *e;
  s.Remove(key);
  return copy;
}

std::size_t BlockIndex::LongestCachedPrefix(std::span<const BlockKey> chain, TierMask usable,
                                            std::optional<std::int64_t> now_us,
                                            std::span<TierMask> masks) {
  std::size_t n = 0;
  for (const BlockKey& key : chain) {
    Shard& s = ShardFor(key);
    MutexLock lock(&s.mu);
    BlockEntry* e = s.Find(key);
    if (e == nullptr || (e->tiers & usable) == 0) break;
    if (now_us) {
      e->last_access_us = *now_us;
      if (e->accesses != UINT32_MAX) ++e->accesses;
    }
    if (n < masks.size()) masks[n] = e->tiers;
    ++n;
  }
  return n;
}

std::size_t BlockIndex::Size() const {
  std::size_t n = 0;
  for (unsigned i = 0; i <= mask_; ++i) {
    MutexLock lock(&shards_[i].mu);
    n += shards_[i].ids.size();
  }
  return n;
}

double BlockIndex::BytesPerEntry() const {
  std::size_t bytes = 0, entries = 0;
  for (unsigned i = 0; i <= mask_; ++i) {
    const Shard& s = shards_[i];
    MutexLock lock(&s.mu);
    // SwissTable: per bucket one slot and one control byte, plus a trailing control group.
    bytes += s.ids.capacity() * (sizeof(std::pair<const BlockKey, std::uint32_t>) + 1) + 16;
    bytes += s.chunks.size() * kChunkEntries * sizeof(BlockEntry) +
             s.chunks.capacity() * sizeof(void*) + s.free_ids.capacity() * sizeof(std::uint32_t);
    entries += s.ids.size();
  }
  return entries == 0 ? 0.0 : static_cast<double>(bytes) / static_cast<double>(entries);
}

void BlockIndex::ForEach(const std::function<void(const BlockKey&, const BlockEntry&)>& fn) const {
  for (unsigned i = 0; i <= mask_; ++i) {
    Shard& s = shards_[i];
    std::vector<std::pair<BlockKey, BlockEntry>> copy;
    {
      MutexLock lock(&s.mu);
      copy.reserve(s.ids.size());
      for (const auto& [key, id] : s.ids) copy.emplace_back(key, s.At(id));
    }
    for (const auto& [k, e] : copy) fn(k, e);
  }
}

}  // namespace cachesvc
