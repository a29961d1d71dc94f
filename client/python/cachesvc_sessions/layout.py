"""A model layout as the agent side names it, and its fingerprint (proto/KEYS.md).

A session belongs to one layout: the KV shape of one engine's tensor-parallel rank. The daemon
knows a layout once an engine of the same tenant has registered it (BlockService.RegisterEngine);
agent frameworks then open sessions by its 64-bit fingerprint. ``Layout.fingerprint()`` computes
that fingerprint locally, byte for byte as proto/KEYS.md fixes it (XXH3-64 of the canonical
encoding; needs Debian's python3-xxhash, imported only when a fingerprint is computed), so the
framework does not need the engine to tell it.

``validate()`` applies the daemon's rules (proto/layout.cc), so a bad layout fails here with
InvalidArgument naming the field, before any call.
"""

from __future__ import annotations

import dataclasses
import struct

from .errors import InvalidArgument

DTYPES = {"fp16": 1, "bf16": 2, "fp8_e4m3": 3, "fp32": 4}
ATTENTION_KINDS = {"mha_gqa": 1, "mla": 2}

_DOMAIN = b"cachesvc/layout/v1"
_MAX_MODEL_ID_BYTES = 256
_MAX_LAYERS = 1024
_MAX_KV_HEADS = 1024
_MAX_HEAD_DIM = 4096
_MAX_BLOCK_TOKENS = 65536
_U32_MAX = 2**32 - 1


def _enum_value(field: str, value, names: dict) -> int:
    if isinstance(value, str):
        if value.lower() not in names:
            raise InvalidArgument(f"layout.{field} = {value!r}: not one of {sorted(names)}")
        return names[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
        return value
    raise InvalidArgument(f"layout.{field} = {value!r}: not one of {sorted(names)} "
                          f"or their numbers {sorted(names.values())}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """One engine's KV for one tensor-parallel rank (cachesvc.v1.ModelLayout)."""

    model_id: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str | int = "fp16"       # "fp16", "bf16", "fp8_e4m3", "fp32" or the enum number
    block_tokens: int = 16
    tp_rank: int = 0
    tp_size: int = 1
    attention: str | int = "mha_gqa"  # "mha_gqa" or "mla" or the enum number

    def validate(self) -> None:
        """Raises InvalidArgument naming the first field the daemon would refuse."""
        if not isinstance(self.model_id, str):
            raise InvalidArgument(f"layout.model_id must be a str, got {self.model_id!r}")
        n = len(self.model_id.encode("utf-8"))
        if not 1 <= n <= _MAX_MODEL_ID_BYTES:
            raise InvalidArgument(f"layout.model_id must be 1..{_MAX_MODEL_ID_BYTES} bytes, got {n}")
        for field, lo, hi in (("num_layers", 1, _MAX_LAYERS), ("num_kv_heads", 1, _MAX_KV_HEADS),
                              ("head_dim", 1, _MAX_HEAD_DIM),
                              ("block_tokens", 1, _MAX_BLOCK_TOKENS), ("tp_size", 1, _U32_MAX)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise InvalidArgument(f"layout.{field} = {value!r} is out of range [{lo}, {hi}]")
        if (not isinstance(self.tp_rank, int) or isinstance(self.tp_rank, bool)
                or not 0 <= self.tp_rank < self.tp_size):
            raise InvalidArgument(
                f"layout.tp_rank = {self.tp_rank!r} is out of range [0, {self.tp_size - 1}]")
        _enum_value("dtype", self.dtype, DTYPES)
        attention = _enum_value("attention", self.attention, ATTENTION_KINDS)
        if attention == ATTENTION_KINDS["mla"] and self.num_kv_heads != 1:
            raise InvalidArgument("layout.num_kv_heads must be 1 for MLA (the latent is one vector "
                                  f"per token), got {self.num_kv_heads}")

    def canonical_encoding(self) -> bytes:
        """The bytes proto/KEYS.md hashes: domain, model_id length and bytes, eight u32 fields."""
        self.validate()
        model = self.model_id.encode("utf-8")
        fields = (self.num_layers, self.num_kv_heads, self.head_dim,
                  _enum_value("dtype", self.dtype, DTYPES), self.block_tokens, self.tp_rank,
                  self.tp_size, _enum_value("attention", self.attention, ATTENTION_KINDS))
        return _DOMAIN + struct.pack("<I", len(model)) + model + struct.pack("<8I", *fields)

    def fingerprint(self) -> int:
        """XXH3-64 of the canonical encoding: the layout's name on the wire."""
        try:
            import xxhash  # Debian: python3-xxhash
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise ImportError("Layout.fingerprint() needs the xxhash module (Debian package "
                              "python3-xxhash); or pass the fingerprint the engine registered "
                              "as an int") from e
        return xxhash.xxh3_64_intdigest(self.canonical_encoding())

    def to_proto(self, pb2):
        """The cachesvc.v1.ModelLayout message of the generated module ``pb2``."""
        self.validate()
        return pb2.ModelLayout(
            model_id=self.model_id, num_layers=self.num_layers, num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim, dtype=_enum_value("dtype", self.dtype, DTYPES),
            block_tokens=self.block_tokens, tp_rank=self.tp_rank, tp_size=self.tp_size,
            attention=_enum_value("attention", self.attention, ATTENTION_KINDS))
