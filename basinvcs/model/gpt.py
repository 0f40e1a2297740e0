"""The GPT-style decoder family that the built-in substrates are members of, in plain torch.

Byte-level (vocabulary 256), learned token and position embeddings, pre-LayerNorm blocks of causal
self-attention and a 4x GELU MLP, a final LayerNorm and an LM head tied to the token embedding.
No Linear or LayerNorm has a bias and there are no buffers, so ``named_parameters()`` and
``state_dict()`` name the same tensors in the same order: the canonical tensor list of a substrate.
Build on ``device="meta"`` to inspect a 10B configuration without allocating it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SchemaError


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """One family member's shape. n_head is the one field that no tensor shape reveals."""

    vocab_size: int = 256
    d_model: int
    n_layer: int
    n_head: int
    context: int

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 1 << 31:
                raise SchemaError(
                    f"GPT config {key} must be a positive integer below 2^31, not {value!r}"
                )
        if self.d_model % self.n_head:
            raise SchemaError(
                f"GPT config d_model {self.d_model} is not divisible by n_head {self.n_head}"
            )


def _embedding(num: int, dim: int, device: torch.device | str | None) -> nn.Embedding:
    """torch's default N(0, 1) embedding, but not on meta, where normal_ costs a 1 s warm-up."""
    weight = torch.empty(num, dim, device=device)
    if weight.device.type != "meta":
        nn.init.normal_(weight)
    return nn.Embedding.from_pretrained(weight, freeze=False)


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, device: torch.device | str | None) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False, device=device)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, device: torch.device | str | None) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=False, device=device)
        self.fc2 = nn.Linear(4 * config.d_model, config.d_model, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, device: torch.device | str | None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=False, device=device)
        self.attn = Attention(config, device)
        self.ln2 = nn.LayerNorm(config.d_model, bias=False, device=device)
        self.mlp = MLP(config, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A decoder with PyTorch's default initialisation; `Substrate.build()` gives one with θ0."""

    def __init__(self, config: GPTConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = _embedding(config.vocab_size, config.d_model, device)
        self.pos_emb = _embedding(config.context, config.d_model, device)
        self.blocks = nn.ModuleList(Block(config, device) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=False, device=device)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits (batch, time, vocab) for token ids (batch, time)."""
        t = idx.shape[-1]
        if t > self.config.context:
            raise SchemaError(
                f"sequence of {t} tokens exceeds the context of {self.config.context}"
            )
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tok_emb.weight)  # tied head: no tensor of its own
