"""One randomly initialised CLIP saved twice: for Concord and for clip-as-service.

No model hub is reachable here, so both services get the same random ViT-B/32 from disk:

- `concord/`: an open_clip checkpoint directory (`open_clip_config.json`,
  `open_clip_model.safetensors`, CLIP's BPE tokenizer), which Concord's public-CLIP loader
  (`concord.checkpoints.open_checkpoint`) serves as a transformers CLIP.
- `peer/ViT-B-32.pt`: the same state dict in OpenAI's layout (open_clip's own key names),
  which clip-server's torch backend loads for `ViT-B-32::openai`
  (`clip_server.model.model.load_openai_model`).

Two details make the networks equal, not only alike:
- clip-server 0.8.3 rebuilds OpenAI checkpoints with plain GELU (`quick_gelu=False`), so the
  open_clip config says `quick_gelu: false` too.
- clip-server casts the weights to fp16 and back (`convert_weights_to_fp16` then `.float()`)
  on the CPU: the random weights are rounded to fp16 values before saving, which makes that
  round trip lossless.

The tokenizer files are built from the BPE merges open_clip ships
(`bpe_simple_vocab_16e6.txt.gz`, the file OpenAI's SimpleTokenizer and clip-server read), in
the order SimpleTokenizer builds its vocabulary, so both sides produce the same token ids.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PEER_FILE = "ViT-B-32.pt"  # the name clip-server's ViT-B-32::openai entry expects

# open_clip model configs (open_clip/model_configs/ViT-B-32.json and a tiny one for tests).
VARIANTS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {
        "embed_dim": 512,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 512,
            "heads": 8,
            "layers": 12,
        },
    },
    # Same layout at a fraction of the size: the vocabulary and context stay CLIP's (the
    # tokenizer is the real one), heads are 64 wide as clip-server's rebuild assumes.
    "tiny": {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 32},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 1,
            "layers": 2,
        },
    },
}


@dataclass(frozen=True)
class SavedModel:
    variant: str
    concord_dir: Path  # open_clip checkpoint directory, CONCORD_ENCODER_MODEL
    peer_file: Path  # OpenAI-layout state dict for clip-server
    image_size: int


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable character map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def bpe_file() -> Path:
    import open_clip  # type: ignore[import-untyped]

    return Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")


@lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], tuple[str, ...]]:
    """CLIP's vocabulary and merges, built as OpenAI's SimpleTokenizer builds them."""
    with gzip.open(bpe_file()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = tuple(lines[1 : 49152 - 256 - 2 + 1])
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(directory: Path) -> None:
    """CLIP's tokenizer as transformers files (vocab.json, merges.txt, tokenizer_config)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")
    )
    tokenizer.save_pretrained(str(directory))


def random_state(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised open_clip CLIP's state dict, every float rounded to fp16 values."""
    import open_clip

    cfg = VARIANTS[variant]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(
            embed_dim=cfg["embed_dim"],
            vision_cfg=cfg["vision_cfg"],
            text_cfg=cfg["text_cfg"],
            quick_gelu=cfg["quick_gelu"],
        )
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            value = value.half().float()
        state[key] = value.contiguous().clone()
    return state


def reference_model(variant: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network clip-server builds from the peer file (open_clip's CLIP, plain GELU)."""
    import open_clip

    cfg = VARIANTS[variant]
    model = open_clip.model.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=cfg["vision_cfg"],
        text_cfg=cfg["text_cfg"],
        quick_gelu=cfg["quick_gelu"],
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_model(directory: Path, variant: str = "ViT-B-32", seed: int = 0) -> SavedModel:
    """Write both copies of one random CLIP under `directory` (reused when already there)."""
    from safetensors.torch import save_file

    cfg = VARIANTS[variant]
    concord_dir, peer_dir = directory / "concord", directory / "peer"
    saved = SavedModel(
        variant, concord_dir, peer_dir / PEER_FILE, int(cfg["vision_cfg"]["image_size"])
    )
    stamp = directory / "model.json"
    wanted = {"variant": variant, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return saved
    state = random_state(variant, seed)
    write_tokenizer(concord_dir)
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
    }
    (concord_dir / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    save_file(state, str(concord_dir / "open_clip_model.safetensors"))
    peer_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, saved.peer_file)
    stamp.write_text(json.dumps(wanted))
    return saved
