// tests/client/connector_pages_util.h: what the connector tests share without a daemon: a small
// model layout, and an engine-side paged KV cache in CPU memory with a chosen page layout (and
// padding between vectors), filled from a seed, with an independent reading of its strides.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "client/kv_connector_paged.h"

namespace cachesvc::testing {

// 4 layers x 2 (K, V) x 16 tokens x 2 heads x 128 dims x fp16 = 64 KiB per RAW block.
inline ModelLayout ConnectorLayout(std::uint32_t block_tokens = 16) {
  ModelLayout l;
  l.model_id = "connector-test";
  l.num_layers = 4;
  l.num_kv_heads = 2;
  l.head_dim = 128;
  l.dtype = Dtype::kFp16;
  l.block_tokens = block_tokens;
  return l;
}

enum class PageKind { kTokenMajor, kHeadMajor, kSharedKv, kPaddedTokenMajor };

inline const char* PageKindName(PageKind k) {
  switch (k) {
    case PageKind::kTokenMajor:
      return "token_major";
    case PageKind::kHeadMajor:
      return "head_major";
    case PageKind::kSharedKv:
      return "shared_kv";
    case PageKind::kPaddedTokenMajor:
      return "padded_token_major";
  }
  return "?";
}

// An engine's paged KV cache in CPU memory: `num_pages` pages per layer and part, laid out as
// `kind`. kPaddedTokenMajor leaves 32 unused bytes after every vector and 64 after every token,
// so a scatter that writes outside the vectors shows up in the padding.
class EngineCache {
 public:
  EngineCache(const ModelLayout& layout, PageKind kind, std::uint32_t num_pages)
      : layout_(layout), kind_(kind) {
    const std::size_t vec = std::size_t{layout.head_dim} * DtypeBytes(layout.dtype);
    client::PageStrides s;
    switch (kind) {
      case PageKind::kTokenMajor:
        s = client::PageStrides::TokenMajor(layout);
        break;
      case PageKind::kHeadMajor:
        s = client::PageStrides::HeadMajor(layout);
        break;
      case PageKind::kSharedKv:
        s = client::PageStrides::SharedKvTokenMajor(layout);
        break;
      case PageKind::kPaddedTokenMajor:
        s.head_bytes = static_cast<std::int64_t>(vec + 32);
        s.token_bytes = s.head_bytes * layout.num_kv_heads + 64;
        s.page_bytes = static_cast<std::uint64_t>(s.token_bytes) * layout.block_tokens;
        break;
    }
    cache_.dtype = layout.dtype;
    cache_.strides = s;
    const bool shared = kind == PageKind::kSharedKv;
    const std::size_t tensors = layout.num_layers * (shared ? 1 : layout.PartsPerLayer());
    // Pages of one tensor are contiguous (like a torch tensor [num_pages, ...]).
    memory_.assign(tensors * num_pages * s.page_bytes + 64, std::byte{0});
    std::byte* base = memory_.data();
    base += (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
    cache_.layers.resize(layout.num_layers);
    std::size_t t = 0;
    for (auto& layer : cache_.layers) {
      for (int part = 0; part < (shared ? 1 : static_cast<int>(layout.PartsPerLayer())); ++part) {
        auto& pages = part == 0 ? layer.k_pages : layer.v_pages;
        for (std::uint32_t p = 0; p < num_pages; ++p) {
          pages.push_back(base + (t * num_pages + p) * s.page_bytes);
        }
        ++t;
      }
    }
    used_bytes_ = tensors * num_pages * s.page_bytes;
    base_ = base;
  }

  const client::PagedKvCache& cache() const { return cache_; }
  client::PagedKvCache& mutable_cache() { return cache_; }
  std::span<std::byte> bytes() { return {base_, used_bytes_}; }

  // Fills every value of every page with a finite fp16 value of magnitude 2^-6..2^6 from `seed`
  // (and the padding too: it must survive a scatter unchanged).
  void Fill(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i + 1 < used_bytes_; i += 2) {
      const auto r = rng();
      const std::uint16_t sign = (r & 1) << 15;
      const std::uint16_t exp = static_cast<std::uint16_t>(9 + (r >> 1) % 13) << 10;
      const std::uint16_t mant = (r >> 8) & 0x3ff;
      const std::uint16_t bits = sign | exp | mant;
      std::memcpy(base_ + i, &bits, 2);
    }
  }

  // The canonical payload of page `page` (all layers), read straight from the strides here (an
  // independent implementation of the connector's gather).
  std::vector<std::byte> Canonical(std::uint32_t page) const {
    std::vector<std::byte> out;
    ForEachVector(page, [&](std::size_t offset, std::size_t vec) {
      out.insert(out.end(), base_ + offset, base_ + offset + vec);
    });
    return out;
  }

  // Writes `canonical` (a block payload) into `image` (a copy of bytes()) where page `page`'s
  // vectors are: what a correct scatter does to the real pages, and nothing else.
  void WriteCanonical(std::span<std::byte> image, std::uint32_t page,
                      std::span<const std::byte> canonical) const {
    std::size_t at = 0;
    ForEachVector(page, [&](std::size_t offset, std::size_t vec) {
      std::memcpy(image.data() + offset, canonical.data() + at, vec);
      at += vec;
    });
  }

  // Calls f(offset from bytes().data(), vector bytes) for every vector of page `page`, in the
  // canonical order [layer][part][token][head].
  template <typename F>
  void ForEachVector(std::uint32_t page, F f) const {
    const std::size_t vec = std::size_t{layout_.head_dim} * DtypeBytes(layout_.dtype);
    for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
      for (std::uint32_t part = 0; part < layout_.PartsPerLayer(); ++part) {
        const auto& layer = cache_.layers[l];
        const std::byte* base = static_cast<const std::byte*>(
            part == 0 || kind_ == PageKind::kSharedKv ? layer.k_pages[page] : layer.v_pages[page]);
        if (part == 1 && kind_ == PageKind::kSharedKv) base += cache_.strides.part_bytes;
        for (std::uint32_t t = 0; t < layout_.block_tokens; ++t) {
          for (std::uint32_t h = 0; h < layout_.num_kv_heads; ++h) {
            const std::byte* v =
                base + t * cache_.strides.token_bytes + h * cache_.strides.head_bytes;
            f(static_cast<std::size_t>(v - base_), vec);
          }
        }
      }
    }
  }

 private:
  ModelLayout layout_;
  PageKind kind_;
  client::PagedKvCache cache_;
  std::vector<std::byte> memory_;
  std::byte* base_ = nullptr;
  std::size_t used_bytes_ = 0;
};

// `n` token ids from `seed`.
inline std::vector<std::uint32_t> Tokens(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> t(n);
  for (auto& x : t) x = static_cast<std::uint32_t>(rng() % 128000);
  return t;
}

}  // namespace cachesvc::testing
