"""The model layout an engine registers: the KV shape of one tensor-parallel rank.

Field for field cachesvc.v1.ModelLayout (proto/layout.h); the same fields as
cachesvc_sessions.Layout, and Connector accepts either (or any object with these attributes).
The connector validates it (a bad field is InvalidArgument naming it); the daemon's fingerprint
is Connector.fingerprint once connected.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Layout:
    model_id: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "fp16"        # "fp16", "bf16", "fp8_e4m3", "fp32": the pages' element type
    block_tokens: int = 16     # tokens per block (= the engine's page size in tokens)
    tp_rank: int = 0
    tp_size: int = 1
    attention: str = "mha_gqa"  # or "mla" (one latent vector per token, num_kv_heads = 1)

    @property
    def parts(self) -> int:
        """Tensors per layer: K and V (2), or the MLA latent (1)."""
        return 1 if self.attention == "mla" else 2
