"""Running a DualEncoder over datasets: batched image/text encoding, and the text-state cache
(MiniLM's frozen layers computed once per caption, the main CPU cost; a step runs the rest)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.preprocess import TextTokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters are: its inputs go there."""
    return next(model.parameters()).device


@dataclass
class TextStateCache:
    """The text tower's frozen part, computed once per text: the token states entering the first
    trainable layer (padding stripped), so a training step runs only the trainable
    top layers (none when the tower is frozen) and the projection.

    Valid for every model whose text tower has the same frozen depth over the same backbone, so
    one cache serves every run in a process that freezes the same layers. With a `directory`, the
    states also persist there, under the frozen part's fingerprint (`frozen_fingerprint`): the
    next run, in any process, loads them instead of running the frozen layers again (with
    relation probes that is 81k texts, 6 minutes of 2 cores). Each `add` that computes
    something writes one shard of its new texts; shards are written whole or not at all.
    """

    states: dict[str, Tensor] = field(default_factory=dict)
    depth: int | None = None  # frozen layers under the cached states; set by the first add
    directory: Path | None = None  # where states persist; None: this process only
    loaded: int = 0  # states read from `directory` (what a run did not have to compute)
    _store: Path | None = field(default=None, init=False, repr=False)

    def __contains__(self, text: str) -> bool:
        return text in self.states

    def __len__(self) -> int:
        return len(self.states)

    def check(self, model: DualEncoder) -> None:
        """Raise if `model` freezes a different number of layers than the cached states."""
        depth = model.text_tower.frozen_depth
        if self.depth is not None and self.depth != depth:
            raise ValueError(
                f"the text-state cache holds states after {self.depth} frozen layers; this model "
                f"freezes {depth} (one cache per frozen depth)"
            )

    @torch.no_grad()
    def add(
        self,
        model: DualEncoder,
        tokenizer: TextTokenizer,
        texts: Sequence[str],
        batch_size: int = 128,
        progress: bool = False,
    ) -> None:
        """Run the frozen layers over the texts not cached yet (duplicates once)."""
        self.check(model)
        self.depth = model.text_tower.frozen_depth
        if self.directory is not None and self._store is None:
            self._open(model, tokenizer)
        todo = sorted({t for t in texts if t not in self.states}, key=len)
        tower = model.text_tower
        steps = range(0, len(todo), batch_size)
        for s in tqdm(steps, desc="text tower", disable=not progress or not todo, leave=False):
            chunk = todo[s : s + batch_size]
            tok = tokenizer(chunk).to(model_device(model))
            states = tower.frozen_states(tok.input_ids, tok.attention_mask)
            for k, text in enumerate(chunk):
                n = int(tok.attention_mask[k].sum())
                self.states[text] = states[k, :n].clone()
        if self._store is not None and todo:
            self._write_shard(todo)

    def _open(self, model: DualEncoder, tokenizer: TextTokenizer) -> None:
        """Read every shard stored for this model's frozen part, onto the model's device."""
        assert self.directory is not None
        self._store = Path(self.directory) / frozen_fingerprint(model, tokenizer)
        device = model_device(model)
        for shard in sorted(self._store.glob("*.pt")):
            saved = torch.load(shard, map_location=device, weights_only=True)
            rows = torch.split(saved["states"], saved["lengths"].tolist())
            for text, row in zip(saved["texts"], rows, strict=True):
                if text not in self.states:
                    self.states[text] = row
                    self.loaded += 1

    def _write_shard(self, texts: list[str]) -> None:
        assert self._store is not None
        self._store.mkdir(parents=True, exist_ok=True)
        rows = [self.states[t].to("cpu") for t in texts]
        name = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        fd, tmp = tempfile.mkstemp(dir=self._store, suffix=".tmp")
        os.close(fd)
        payload = {
            "texts": list(texts),
            "lengths": torch.tensor([r.shape[0] for r in rows]),
            "states": torch.cat(rows),
        }
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the store from other users' runs
        os.replace(tmp, self._store / f"{name}.pt")  # a reader never sees half a shard

    def batch(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Returns: (states (B, L, D) zero-padded, mask (B, L) bool) for cached texts."""
        missing = [t for t in texts if t not in self.states]
        if missing:
            raise KeyError(f"{len(missing)} texts not in the cache, e.g. {missing[0]!r}")
        rows = [self.states[t] for t in texts]
        length = max(r.shape[0] for r in rows)
        device = rows[0].device  # the device of the model that filled the cache
        states = torch.zeros(len(rows), length, rows[0].shape[1], device=device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for k, r in enumerate(rows):
            states[k, : r.shape[0]] = r
            mask[k, : r.shape[0]] = True
        return states, mask


def frozen_fingerprint(model: DualEncoder, tokenizer: TextTokenizer) -> str:
    """Names what a text's cached states depend on: the tokenizer (vocabulary, truncation), the
    frozen depth and the weights of every frozen backbone parameter (the embeddings and the
    layers under the trainable ones). Equal fingerprints compute equal states for equal texts."""
    tower = model.text_tower
    trainable = {id(p) for p in tower.parameters() if p.requires_grad}
    vocab = sorted(tokenizer.hf_tokenizer.get_vocab().items())
    digest = hashlib.sha256(
        f"depth={tower.frozen_depth} max_length={tokenizer.max_length}".encode()
    )
    digest.update(repr(vocab).encode())
    for name, p in tower.backbone.named_parameters():
        if id(p) not in trainable:
            digest.update(name.encode())
            digest.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"depth{tower.frozen_depth}-{digest.hexdigest()[:16]}"


def project_text(model: DualEncoder, pooled: Tensor, states: Tensor, mask: Tensor) -> Encoded:
    """The text half of `DualEncoder.encode_text` after the tower: project, normalise, mask."""
    tokens = F.normalize(model.text_proj(states), dim=-1) * mask.unsqueeze(-1).to(states.dtype)
    return Encoded(F.normalize(model.text_proj(pooled), dim=-1), tokens, mask)


def encode_texts(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    cache: TextStateCache | None = None,
) -> Encoded:
    """One batch of texts, through the cache when given (gradients flow into the projection)."""
    if cache is not None:
        cache.check(model)
        states, mask = cache.batch(texts)
        pooled, states = model.text_tower.top(states, mask)
        return project_text(model, pooled, states, mask)
    tok = tokenizer(texts).to(model_device(model))
    return model.encode_text(tok.input_ids, tok.attention_mask)


def _cat(parts: list[Encoded]) -> Encoded:
    length = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, length - p.tokens.shape[1])) for p in parts])
    mask = torch.cat([F.pad(p.mask, (0, length - p.mask.shape[1])) for p in parts])
    return Encoded(torch.cat([p.pooled for p in parts]), tokens, mask)


@torch.no_grad()
def embed_images(model: DualEncoder, pixels: Tensor, batch_size: int = 256) -> Encoded:
    """Encode all images (eval mode is the caller's business) on the model's device, a batch
    at a time. Returns: Encoded (N, ...) on that device."""
    device = model_device(model)
    return _cat(
        [
            model.encode_image(pixels[s : s + batch_size].to(device))
            for s in range(0, len(pixels), batch_size)
        ]
    )


@torch.no_grad()
def embed_texts(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    cache: TextStateCache | None = None,
) -> Encoded:
    """Encode all texts, tokens padded to the longest. Uses (and fills) `cache` when given."""
    if cache is not None:
        cache.add(model, tokenizer, texts)
    return _cat(
        [
            encode_texts(model, tokenizer, texts[s : s + batch_size], cache)
            for s in range(0, len(texts), batch_size)
        ]
    )


def encode_foils(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    foils: Sequence[Sequence[str]],
    k: int,
    cache: TextStateCache | None = None,
) -> tuple[Encoded, Tensor]:
    """Each caption's foils laid out as `concord.models.losses.foil_loss` takes them.

    Args:
        foils: per caption, at most `k` foil texts.
    Returns:
        (Encoded of B * K rows, row i * K + j the j-th foil of caption i, zero where caption i
        has fewer; mask (B, K) bool). Only real foils are encoded.
    """
    device = model_device(model)
    mask = torch.zeros(len(foils), k, dtype=torch.bool, device=device)
    for i, fs in enumerate(foils):
        mask[i, : min(len(fs), k)] = True
    texts = [f for fs in foils for f in fs[:k]]
    dim = model.config.embed_dim
    if not texts:
        empty = torch.zeros(len(foils) * k, dim, device=device)
        return Encoded(
            empty, empty[:, None, :], torch.zeros_like(empty[:, :1], dtype=torch.bool)
        ), mask
    real = encode_texts(model, tokenizer, texts, cache)
    rows = mask.flatten().nonzero().squeeze(1)
    pooled = real.pooled.new_zeros(len(foils) * k, dim).index_copy(0, rows, real.pooled)
    tokens = real.tokens.new_zeros(len(foils) * k, *real.tokens.shape[1:]).index_copy(
        0, rows, real.tokens
    )
    token_mask = real.mask.new_zeros(len(foils) * k, real.mask.shape[1]).index_copy(
        0, rows, real.mask
    )
    return Encoded(pooled, tokens, token_mask), mask
