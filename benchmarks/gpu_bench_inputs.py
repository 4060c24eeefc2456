"""What the GPU benchmark measures with: the sizes of a run (full, or the quick dry run), a
random CLIP with its BPE tokenizer written to disk, JPEGs and captions."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_check import captions


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the full GPU run or the quick dry run."""

    clip: dict[str, Any]  # transformers CLIPConfig kwargs (without token ids)
    image_side: int  # side of the JPEGs sent (resized to the model's side by the pipeline)
    batches: tuple[int, ...]
    clients: tuple[int, ...]
    seconds: float  # timing window per throughput figure
    latency_calls: int
    points: int  # search collection size
    scorer_batch: int
    max_queue: int

    @property
    def many(self) -> int:
        return max(self.clients)


VIT_B32 = {
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
    "projection_dim": 512,
}
TINY_CLIP = {
    "text_config": {
        "vocab_size": 512,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "projection_dim": 32,
}
FULL = Sizes(VIT_B32, 256, (1, 32, 256), (1, 4, 16), 1.5, 50, 10_000, 32, 16_384)
QUICK = Sizes(TINY_CLIP, 48, (1, 4, 8), (1, 2), 0.2, 5, 300, 4, 1024)


def write_clip_tokenizer(directory: Path, words: Sequence[str], vocab_size: int) -> tuple[int, int]:
    """A CLIP BPE tokenizer saved to `directory`: the letters, one whole-word token for each
    of `words` (so captions tokenize to about as many tokens as real CLIP gives them) and
    fillers up to `vocab_size`; <|endoftext|> is the last id, as in every CLIP vocabulary.
    Returns: (bos, eos) ids."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 26 + i for i, c in enumerate(chars)}
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        if not word.isalpha() or not word.isascii():
            continue
        # Join the word's current BPE pieces with merges ranked after every existing one:
        # words joined earlier keep their single token, this one gets one too.
        while len(parts := _bpe(word, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    if len(vocab) + 2 > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} < {len(vocab) + 2} tokens")
    for i in range(len(vocab), vocab_size - 2):
        vocab[f"<|filler{i}|>"] = i
    bos, eos = vocab_size - 2, vocab_size - 1
    vocab |= {"<|startoftext|>": bos, "<|endoftext|>": eos}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")
    )
    tokenizer.save_pretrained(directory)
    return bos, eos


def write_clip(directory: Path, config_kwargs: dict[str, Any], words: Sequence[str]) -> Path:
    """A random transformers CLIP (`config_kwargs`: CLIPConfig's, without token ids) and its
    tokenizer (`write_clip_tokenizer`) saved to `directory`."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(config_kwargs["text_config"])
    bos, eos = write_clip_tokenizer(directory, words, int(text["vocab_size"]))
    text |= {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    config = CLIPConfig(
        text_config=text,
        vision_config=config_kwargs["vision_config"],
        projection_dim=config_kwargs["projection_dim"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    return directory


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word: characters, the last with </w>, merged by rank."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        rank, i = min(
            (ranks.get(pair, 1 << 30), i) for i, pair in enumerate(itertools.pairwise(parts))
        )
        if rank == 1 << 30:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def make_jpegs(n: int, side: int, seed: int = 0) -> list[bytes]:
    """Smooth random pictures (low-frequency colour fields plus grain) as quality-90 JPEGs:
    about the size a real photo of that side has, unlike pure noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        field_ = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(field_).resize((side, side), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 8, (side, side, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def texts_for(n: int) -> list[str]:
    return captions(n)
