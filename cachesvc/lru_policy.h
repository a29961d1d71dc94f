// cachesvc/lru_policy.h: the LRU family's parts, shared by the files of the policies built on
// them (lru_policy.cc: lru-hbm, lru-tiered, ttl-pin; agent_aware_policy.cc: cachesvc). Not part
// of the core's interface: everything else asks residency_policy.h's factories.
//
// Recency lists are doubly linked lists over a slab of nodes addressed by index (indices survive
// the slab's growth, pointers into a hash map would not), with a key -> index map, so every
// notification is O(1); pinned blocks ordered by expected return cost O(log n).
#pragma once

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "cachesvc/block_index.h"
#include "cachesvc/residency_policy.h"

namespace cachesvc::policy_internal {

// The blocks of one tier in recency order, each with what the policies note about it. A block
// can be held out of the order (pinned: it stays in the tier's table, with its notes, but
// Oldest() never names it) and later put back.
class RecencyList {
 public:
  struct Node {
    BlockKey key;
    std::int64_t used_us = 0;  // the `now_us` of its last Touch
    std::uint64_t owner = 0;   // the session that used it last (0: none known)
    bool shared = false;       // more than one session used it
    bool held = false;         // out of the recency order
    std::uint32_t prev = kNone;
    std::uint32_t next = kNone;
  };

  // Makes `key` the most recent, adding it if new (or putting it back if held); `was_held` says
  // whether it was held.
  Node& Touch(const BlockKey& key, std::int64_t now_us, bool* was_held = nullptr) {
    const std::uint32_t i = Upsert(key, was_held);
    PushFront(i);
    nodes_[i].used_us = now_us;
    return nodes_[i];
  }
  // A run keeps a request's chain in chain order: the first block touched in the run becomes the
  // most recent, each next one goes just behind the previous, so a chain leaves from its tail
  // (a prefix hit needs the head: evicting the head first would make the rest useless).
  void BeginRun() { anchor_ = kNone; }
  Node& TouchInRun(const BlockKey& key, std::int64_t now_us, bool* was_held = nullptr) {
    const std::uint32_t i = Upsert(key, was_held);
    if (anchor_ == kNone) {
      PushFront(i);
    } else {
      InsertAfter(anchor_, i);
    }
    nodes_[i].used_us = now_us;
    anchor_ = i;
    return nodes_[i];
  }
  // Takes `key` out of the recency order if it is in the tier; returns whether it is.
  bool HoldIfPresent(const BlockKey& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    if (!nodes_[it->second].held) Unlink(it->second);
    nodes_[it->second].held = true;
    return true;
  }
  // Takes `key` out of the recency order (adding it if new); its notes stay.
  void Hold(const BlockKey& key) {
    auto [it, inserted] = index_.try_emplace(key, kNone);
    if (inserted) {
      it->second = Allocate(key);
    } else if (!nodes_[it->second].held) {
      Unlink(it->second);
    }
    nodes_[it->second].held = true;
  }
  // Puts `key` (held or not) back as the least recent block, last used at time 0 (long ago: it
  // is not expected back); false if it is not in the tier.
  bool MoveToOldest(const BlockKey& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    const std::uint32_t i = it->second;
    if (!nodes_[i].held) Unlink(i);
    nodes_[i].held = false;
    nodes_[i].used_us = 0;
    nodes_[i].next = kNone;
    nodes_[i].prev = tail_;
    if (tail_ != kNone) nodes_[tail_].next = i;
    tail_ = i;
    if (head_ == kNone) head_ = i;
    return true;
  }
  // Removes `key`; returns whether it was there and held.
  bool Erase(const BlockKey& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    const bool held = nodes_[it->second].held;
    if (!held) Unlink(it->second);
    free_.push_back(it->second);
    index_.erase(it);
    return held;
  }
  [[nodiscard]] const Node* Find(const BlockKey& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &nodes_[it->second];
  }
  [[nodiscard]] bool Contains(const BlockKey& key) const { return index_.contains(key); }
  // The least recent block that `evictable` accepts (nullptr: none; held blocks are never
  // named).
  [[nodiscard]] const Node* Oldest(ResidencyPolicy::Evictable evictable) const {
    for (std::uint32_t i = tail_; i != kNone; i = nodes_[i].prev) {
      if (evictable(nodes_[i].key)) return &nodes_[i];
    }
    return nullptr;
  }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  // The node of `key`, added if new, out of the order (the caller links it).
  std::uint32_t Upsert(const BlockKey& key, bool* was_held) {
    auto [it, inserted] = index_.try_emplace(key, kNone);
    bool held = false;
    if (inserted) {
      it->second = Allocate(key);
    } else if (nodes_[it->second].held) {
      held = true;
      nodes_[it->second].held = false;
    } else {
      Unlink(it->second);
    }
    if (was_held != nullptr) *was_held = held;
    return it->second;
  }
  std::uint32_t Allocate(const BlockKey& key) {
    if (!free_.empty()) {
      const std::uint32_t i = free_.back();
      free_.pop_back();
      nodes_[i] = Node{key};
      return i;
    }
    nodes_.push_back(Node{key});
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }
  void PushFront(std::uint32_t i) {
    nodes_[i].prev = kNone;
    nodes_[i].next = head_;
    if (head_ != kNone) nodes_[head_].prev = i;
    head_ = i;
    if (tail_ == kNone) tail_ = i;
  }
  void InsertAfter(std::uint32_t at, std::uint32_t i) {
    nodes_[i].prev = at;
    nodes_[i].next = nodes_[at].next;
    if (nodes_[at].next != kNone) {
      nodes_[nodes_[at].next].prev = i;
    } else {
      tail_ = i;
    }
    nodes_[at].next = i;
  }
  void Unlink(std::uint32_t i) {
    if (i == anchor_) anchor_ = nodes_[i].prev;  // the run goes on behind the one ahead of it
    Node& n = nodes_[i];
    if (n.prev != kNone) {
      nodes_[n.prev].next = n.next;
    } else {
      head_ = n.next;
    }
    if (n.next != kNone) {
      nodes_[n.next].prev = n.prev;
    } else {
      tail_ = n.prev;
    }
    n.prev = n.next = kNone;
  }

  absl::flat_hash_map<BlockKey, std::uint32_t> index_;
  std::vector<Node> nodes_;
  std::vector<std::uint32_t> free_;
  std::uint32_t head_ = kNone;
  std::uint32_t tail_ = kNone;
  std::uint32_t anchor_ = kNone;  // the last node placed by the current run
};

// The blocks pinned in the fastest tier, and which of them leaves first when nothing unpinned is
// left: the least recently used (by_return = false), or the one expected to be used last
// (by_return = true: Belady's rule with the expected return of the session as the next use). The
// latter is a max-heap with lazy deletion (an entry counts while it matches next_use_), so a
// pin costs no allocation per block; it is rebuilt when stale entries outnumber live ones.
class PinnedBlocks {
 public:
  explicit PinnedBlocks(bool by_return) : by_return_(by_return) {}
  // `key` is pinned and in the fastest tier; its next use is expected at `next_use_us`.
  void Touch(const BlockKey& key, std::int64_t next_use_us) {
    if (!by_return_) {
      lru_.Touch(key, 0);
      return;
    }
    const Entry e{next_use_us, ++seq_, key};
    auto [it, inserted] = next_use_.try_emplace(key, Stamp{e.use_us, e.seq});
    if (!inserted) {
      if (it->second.use_us == next_use_us) return;
      it->second = Stamp{e.use_us, e.seq};
    }
    heap_.push_back(e);
    std::push_heap(heap_.begin(), heap_.end());
    if (heap_.size() > 2 * next_use_.size() + 4096) Rebuild();
  }
  void Erase(const BlockKey& key) {
    if (by_return_) {
      next_use_.erase(key);
    } else {
      lru_.Erase(key);
    }
  }
  // The block to leave first among those `evictable` accepts, if any; with by_return,
  // `next_use_us` receives its next use.
  [[nodiscard]] std::optional<BlockKey> Victim(ResidencyPolicy::Evictable evictable,
                                               std::int64_t* next_use_us = nullptr) {
    if (!by_return_) {
      const RecencyList::Node* n = lru_.Oldest(evictable);
      return n == nullptr ? std::nullopt : std::optional<BlockKey>(n->key);
    }
    std::optional<BlockKey> found;
    skipped_.clear();
    while (!heap_.empty()) {
      const Entry top = heap_.front();
      auto it = next_use_.find(top.key);
      const bool live = it != next_use_.end() && it->second.seq == top.seq;
      if (live && evictable(top.key)) {
        if (next_use_us != nullptr) *next_use_us = top.use_us;
        found = top.key;
        break;
      }
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.pop_back();
      if (live) skipped_.push_back(top);  // not evictable now: back into the heap below
    }
    for (const Entry& e : skipped_) {
      heap_.push_back(e);
      std::push_heap(heap_.begin(), heap_.end());
    }
    return found;
  }

 private:
  // Ties in next use go by pin order: the earlier pinned leaves first (for one chain, its head;
  // measured slightly better on the Claude Code sessions than tail first, since the whole chain
  // is prefetched back together anyway).
  struct Stamp {
    std::int64_t use_us;
    std::uint64_t seq;
  };
  struct Entry {
    std::int64_t use_us;
    std::uint64_t seq;
    BlockKey key;
    friend bool operator<(const Entry& a, const Entry& b) {
      return a.use_us != b.use_us ? a.use_us < b.use_us : a.seq > b.seq;
    }
  };
  void Rebuild() {
    heap_.clear();
    for (const auto& [key, stamp] : next_use_) heap_.push_back({stamp.use_us, stamp.seq, key});
    std::make_heap(heap_.begin(), heap_.end());
  }

  const bool by_return_;
  RecencyList lru_;
  absl::flat_hash_map<BlockKey, Stamp> next_use_;  // the pinned blocks (by_return)
  std::vector<Entry> heap_;                        // max-heap by next use, lazy
  std::vector<Entry> skipped_;                     // Victim's scratch
  std::uint64_t seq_ = 0;
};

class LruPolicy : public ResidencyPolicy {
 public:
  // What the agent-aware policy adds to LRU (all off: lru-tiered / lru-hbm / ttl-pin).
  struct Options {
    bool cascade = true;  // demote HBM -> host -> NVMe (else drop what leaves a tier)
    // A request's blocks keep chain order in the fastest tier's recency list (see
    // RecencyList::TouchInRun): a chain leaves from its tail, not its head.
    bool chain_order = false;
    // A block promoted into the fastest tier gives up its copies below (ExclusiveTiers).
    bool exclusive = false;
    // Pinned blocks are ordered by their expected next use (the return of the first session
    // waiting on them), not by recency: Belady's rule with expectations.
    bool pinned_by_return = false;
    // With pinned_by_return: a pinned block expected back more than this far ahead leaves before
    // the least recently used unpinned one if that one has been idle for less time than the pinned
    // one has yet to wait (the prefetch brings it back before the return). 0 = never.
    std::int64_t evict_pinned_beyond_us = 0;
    // A pinned block that a request uses goes back to the recency order (it is in use, by its own
    // session or by another that shares it); the next tool call pins it again.
    bool unpin_on_use = false;
    // SessionClosed moves the closed session's blocks that no other session used to the tail.
    bool closed_first = false;
    // The tier pins and chain order apply to: HBM in an engine, host memory in a daemon
    // without HBM.
    tiers::TierKind fastest = tiers::TierKind::kHbm;
  };
  explicit LruPolicy(Options options)
      : kFast(Index(options.fastest)), options_(options), pinned_(options.pinned_by_return) {}

  std::string_view Name() const override { return options_.cascade ? "lru-tiered" : "lru-hbm"; }

  void BeginRequest(std::uint64_t session, std::span<const BlockKey>, std::int64_t,
                    RequestStep step) override {
    in_request_ = true;
    session_ = session;
    if (step != RequestStep::kReserve) lists_[kFast].BeginRun();
  }
  void EndRequest(std::int64_t) override { in_request_ = false; }
  void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain,
                     std::int64_t) override {
    if (!options_.closed_first || session == 0) return;
    RecencyList& list = lists_[kFast];
    for (const BlockKey& key : chain) {  // each goes behind the one before: the tail leaves first
      const RecencyList::Node* n = list.Find(key);
      // Blocks another session used stay; so do blocks the closed session did not use, unless
      // no request told whose they are (a daemon client that saves without a session id: the
      // store then names only the blocks of no other live session's context).
      if (n == nullptr || n->held || n->shared || (n->owner != 0 && n->owner != session)) {
        continue;
      }
      list.MoveToOldest(key);
    }
  }
  void Added(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) override {
    Touched(key, tier, now_us);
  }
  void Touched(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) override {
    const unsigned t = Index(tier);
    if (t != kFast) {
      lists_[t].Touch(key, now_us);
      return;
    }
    RecencyList& list = lists_[kFast];
    if (!(options_.unpin_on_use && in_request_) && !pins_.empty()) {
      if (auto p = pins_.find(key); p != pins_.end() && p->second.until_us > now_us) {
        list.Hold(key);
        pinned_.Touch(key, p->second.next_use_us);
        return;
      }
    }
    bool was_held = false;
    RecencyList::Node& n = in_request_ && options_.chain_order
                               ? list.TouchInRun(key, now_us, &was_held)
                               : list.Touch(key, now_us, &was_held);
    if (was_held) pinned_.Erase(key);
    if (in_request_ && session_ != 0) {
      if (n.owner != 0 && n.owner != session_) n.shared = true;
      n.owner = session_;
    }
  }
  void PrefetchFound(const BlockKey& key, std::int64_t now_us) override {
    // Still in HBM in the recency order (another session used it since the pin): it becomes the
    // most recent, or it could leave in the last moment before its session returns.
    const RecencyList::Node* n = lists_[kFast].Find(key);
    if (n != nullptr && !n->held) lists_[kFast].TouchInRun(key, now_us);
  }
  void Removed(const BlockKey& key, tiers::TierKind tier) override {
    const unsigned t = Index(tier);
    if (lists_[t].Erase(key) && t == kFast) pinned_.Erase(key);
  }

  using ResidencyPolicy::ChooseVictim;
  std::optional<BlockKey> ChooseVictim(tiers::TierKind tier, std::int64_t now_us,
                                       Evictable evictable) override {
    const unsigned t = Index(tier);
    if (t != kFast) {
      const RecencyList::Node* n = lists_[t].Oldest(evictable);
      return n == nullptr ? std::nullopt : std::optional<BlockKey>(n->key);
    }
    ExpirePins(now_us);
    const RecencyList::Node* oldest = lists_[t].Oldest(evictable);
    if (oldest == nullptr) return pinned_.Victim(evictable);  // only pinned blocks left
    if (options_.evict_pinned_beyond_us > 0) {
      std::int64_t next_use_us = 0;
      if (auto v = pinned_.Victim(evictable, &next_use_us)) {
        const std::int64_t pinned_wait = next_use_us - now_us;
        const std::int64_t lru_idle = now_us - oldest->used_us;
        if (pinned_wait > options_.evict_pinned_beyond_us && pinned_wait > lru_idle) return v;
      }
    }
    return oldest->key;
  }
  bool ExclusiveTiers() const override { return options_.exclusive; }
  std::optional<tiers::TierKind> DemoteTarget(tiers::TierKind from) const override {
    if (!options_.cascade) return std::nullopt;
    switch (from) {
      case tiers::TierKind::kHbm:
        return tiers::TierKind::kHost;
      case tiers::TierKind::kHost:
        return tiers::TierKind::kNvme;
      case tiers::TierKind::kNvme:
        return std::nullopt;
    }
    return std::nullopt;
  }

 protected:
  // Index of Options::fastest.
  const unsigned kFast;  // NOLINT(readability-identifier-naming): reads as the constant it is

  // One waiting session is back: its pins of `chain`, which ended at `until_us` at the latest,
  // end; a block another waiting session also pinned stays pinned.
  void Unpin(std::span<const BlockKey> chain, std::int64_t until_us, std::int64_t now_us) {
    if (until_us <= now_us) return;  // expired already (blocks may be pinned by others since)
    for (const BlockKey& k : chain) {
      auto it = pins_.find(k);
      if (it == pins_.end() || it->second.until_us <= now_us || --it->second.waiters > 0) continue;
      pins_.erase(it);
      const RecencyList::Node* n = lists_[kFast].Find(k);
      if (n != nullptr && n->held) {
        pinned_.Erase(k);
        lists_[kFast].Touch(k, now_us);
      }
    }
  }

  // Pins `chain` in the fastest tier for one more waiting session, expected back at
  // `next_use_us`, until `until_us` at the latest (pins of several sessions on one block last
  // until the last of them ends and count as needed by the first to return). Pinned blocks that
  // are in HBM are held out of the recency order, which eviction turns to only when the unpinned
  // list is empty (or, with evict_pinned_beyond_us, when they are needed later than its oldest
  // block); pins time out through a map of end times, one entry per call.
  void Pin(std::span<const BlockKey> chain, std::int64_t now_us, std::int64_t next_use_us,
           std::int64_t until_us) {
    std::vector<BlockKey> extended;
    extended.reserve(chain.size());
    for (const BlockKey& k : chain) {
      PinState& p = pins_[k];
      if (p.until_us <= now_us) {  // no pin, or one that has timed out
        p.waiters = 0;
        p.next_use_us = next_use_us;
      } else {
        p.next_use_us = std::min(p.next_use_us, next_use_us);
      }
      ++p.waiters;
      const bool extends = until_us > p.until_us;
      if (extends) {
        p.until_us = until_us;
        extended.push_back(k);
      }
      if ((extends || options_.pinned_by_return) && lists_[kFast].HoldIfPresent(k)) {
        pinned_.Touch(k, p.next_use_us);  // in HBM
      }
    }
    if (!extended.empty()) expiries_.emplace(until_us, std::move(extended));
  }
  void ExpirePins(std::int64_t now_us) {
    while (!expiries_.empty() && expiries_.begin()->first <= now_us) {
      const std::int64_t until = expiries_.begin()->first;
      for (const BlockKey& key : expiries_.begin()->second) {
        auto it = pins_.find(key);
        if (it == pins_.end() || it->second.until_us != until) continue;  // extended since
        pins_.erase(it);
        if (const RecencyList::Node* n = lists_[kFast].Find(key); n != nullptr && n->held) {
          // Its last use was when the pin began, before anything touched since: it returns as
          // the least recent block.
          pinned_.Erase(key);
          lists_[kFast].MoveToOldest(key);
        }
      }
      expiries_.erase(expiries_.begin());
    }
  }

  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }

  const Options options_;
  struct PinState {
    std::int64_t until_us = 0;     // pinned in HBM until (the last of the pins' ends)
    std::int64_t next_use_us = 0;  // the first expected return among the waiting sessions
    std::uint32_t waiters = 0;     // sessions waiting on it (Unpin ends the pin at 0)
  };
  absl::flat_hash_map<BlockKey, PinState> pins_;
  PinnedBlocks pinned_;  // pinned blocks now in HBM
  // Pin end -> the blocks whose pin ends then (unless extended since), one entry per Pin call.
  std::multimap<std::int64_t, std::vector<BlockKey>> expiries_;
  // Per tier, its blocks; in HBM, pinned ones are held out of the recency order (and in pinned_).
  std::array<RecencyList, kTierKinds> lists_;
  bool in_request_ = false;    // between BeginRequest and EndRequest
  std::uint64_t session_ = 0;  // the request's session
};

}  // namespace cachesvc::policy_internal
