"""A byte-level language model on the Python standard library's own source files.

The corpus is every ``*.py`` file at the top level of the running Python's standard library
(``sysconfig.get_paths()["stdlib"]``), so it ships with every Python and nothing is downloaded.
Files are assigned to a split by a hash of their name (CRC-32 mod 10: 0 validation, 1 test, the
rest training), so a held-out file is never seen in training, not even in part. The corpus
differs a little between Python versions: ``corpus_info()`` records the Python version and a
SHA-256 of the text, and the report prints them; compare runs only on the same corpus.

The model is a small decoder-only transformer (pre-LayerNorm blocks, causal self-attention via
``scaled_dot_product_attention``, GELU MLP, learned positions), trained on random windows of
the training text. The metric is bits per byte on a fixed set of windows spread evenly over
the held-out text.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import sysconfig
import zlib
from pathlib import Path

import torch
from torch import Tensor, nn

VOCAB = 256  # bytes


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=1)
def corpus() -> dict[str, Tensor]:
    """``{"train", "val", "test"}``: the bytes of each split as an int64 tensor."""
    root = stdlib_dir()
    files = sorted(root.glob("*.py"))
    if len(files) < 50:
        raise ValueError(f"the standard library's source files are not readable in {root} "
                         f"(found {len(files)} *.py files); the stdlib-lm task needs them")
    parts: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    for path in files:
        bucket = zlib.crc32(path.name.encode()) % 10
        parts[{0: "val", 1: "test"}.get(bucket, "train")].append(path.read_bytes())
    return {name: torch.frombuffer(bytearray(b"\n".join(chunks)), dtype=torch.uint8).long()
            for name, chunks in parts.items()}


def corpus_info() -> dict[str, object]:
    """The corpus's identity: Python version, a SHA-256 of its bytes, and its split sizes."""
    data = corpus()
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        digest.update(data[name].to(torch.uint8).numpy().tobytes())
    return {"python": ".".join(map(str, sys.version_info[:3])), "sha256": digest.hexdigest(),
            **{f"{name}_bytes": len(data[name]) for name in ("train", "val", "test")}}


def eval_windows(text: Tensor, count: int, context: int) -> Tensor:
    """``count`` windows of ``context + 1`` bytes, evenly spread over ``text`` (fixed)."""
    starts = torch.linspace(0, len(text) - context - 2, count).long()
    return torch.stack([text[s:s + context + 1] for s in starts.tolist()])


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc, self.out = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(batch, length, dim))
        return x + self.out(nn.functional.gelu(self.fc(self.norm2(x))))


class TinyGPT(nn.Module):
    """Byte embedding + learned positions -> ``layers`` blocks -> LayerNorm -> byte logits."""

    def __init__(self, dim: int = 48, layers: int = 2, heads: int = 4, context: int = 48):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(context, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-byte cross-entropy, in nats."""
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def bits_per_byte(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-byte cross-entropy, in bits per byte (the LM task's metric)."""
    return lm_loss(logits, targets) / math.log(2)


__all__ = ["TinyGPT", "bits_per_byte", "corpus", "corpus_info", "eval_windows", "lm_loss"]
