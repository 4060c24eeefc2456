"""Training, held-out accuracy and on-disk caching of the judge (pipelines.generator.judges).

The judge learns only from ground-truth Concord Scenes renders (uniform over shapes and colours,
so the generator's rare class is not rare for the judge), lightly blurred and noised so that it
still reads the softer pictures a small diffusion model draws.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipelines.data.render import render
from pipelines.generator.data import DataConfig, simple_scene
from pipelines.generator.evaluate import layout_miou
from pipelines.generator.judges import (
    COLOUR_NAMES,
    JudgeNet,
    detections,
    read,
    to_tensor,
)

VERSION = 2  # bump when the net, the data or the recipe changes (invalidates caches)


@dataclass(frozen=True)
class Renders:
    images: np.ndarray  # (N,H,W,3) uint8
    layouts: np.ndarray  # (N,H,W) uint8 class ids
    colours: np.ndarray  # (N,H,W) uint8 colour ids (0 none)
    objects: list[list[tuple[str, str]]]  # per image, the (colour, shape) of each visible object


def judge_domain(data: DataConfig) -> DataConfig:
    """The generator's data domain with every shape equally likely (no rare class for the judge)."""
    return replace(data, rare_shape=None, max_objects=3)


def make_renders(n: int, data: DataConfig, seed: int) -> Renders:
    """`n` random scenes of the generator's domain (`data`: shapes, colours, sizes, background)
    rendered at data.size; objects fully hidden by others are not listed."""
    rng = np.random.default_rng([seed, 4242])
    cfg = judge_domain(data)
    imgs, lays, cols, objs = [], [], [], []
    for _ in range(n):
        scene = simple_scene(rng, cfg)
        out = render(scene, cfg.size)
        cmap = np.zeros(out.instances.shape, np.uint8)
        visible = []
        for k, o in enumerate(scene.objects):
            m = out.instances == k + 1
            cmap[m] = COLOUR_NAMES.index(o.colour) + 1
            if m.any():
                visible.append((o.colour, o.shape))
        imgs.append(out.image)
        lays.append(out.layout)
        cols.append(cmap)
        objs.append(visible)
    return Renders(np.stack(imgs), np.stack(lays), np.stack(cols), objs)


def noise_images(b: int, size: int, gen: torch.Generator) -> Tensor:
    """Pictures with no object (pixel noise, smoothed to random degrees): negatives that teach
    the judge to see nothing in an untrained generator's output."""
    x = torch.rand(b, 3, size, size, generator=gen)
    k = int(torch.randint(1, 4, (1,), generator=gen))
    if k > 1:
        x = nn.functional.avg_pool2d(x, 2 * k - 1, stride=1, padding=k - 1, count_include_pad=False)
    lo = torch.rand(b, 1, 1, 1, generator=gen) * 0.5
    return (lo + x * (1 - lo)).clamp(0, 1)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random blur (blend with a 3x3 box blur) and Gaussian noise, per image."""
    b = x.shape[0]
    w = torch.rand(b, 1, 1, 1, generator=gen) * 0.7
    blurred = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    sigma = torch.rand(b, 1, 1, 1, generator=gen) * 0.06
    return ((1 - w) * x + w * blurred + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)


@dataclass(frozen=True)
class JudgeAccuracy:
    """How far to trust the judge: measured on held-out ground-truth renders."""

    images: int
    pixel_accuracy: float  # shape class, all pixels
    foreground_accuracy: float  # shape class, object pixels only
    miou: float  # shape classes present in the truth or the prediction
    object_recall: float  # true (colour, shape) objects found (colour from the colour head)
    object_precision: float  # detections matching a true object
    object_recall_mean_colour: float  # the same recall, colour from the mean pixel colour
    shape_recall: float  # true shapes found, colour ignored
    noise_false_positive_rate: float  # pure-noise pictures in which it detects any object
    per_shape_recall: dict[str, float]


def evaluate_judge(net: JudgeNet, data: Renders, noise: int = 200) -> JudgeAccuracy:
    """Pixel, layout and object-level accuracy of the judge on `data`, and its false alarms on
    `noise` pictures of pixel noise."""
    gen = torch.Generator().manual_seed(123)
    junk = torch.cat([noise_images(noise // 4, data.images.shape[1], gen) for _ in range(4)])
    rn = read(net, (junk.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
    fp = float(np.mean([bool(detections(rn, i)) for i in range(len(junk))]))
    r = read(net, data.images)
    fg = data.layouts > 0
    found = {"head": 0, "mean": 0, "shape": 0}
    total, tp_det, n_det = 0, 0, 0
    per_shape: dict[str, list[int]] = {}
    for i, objs in enumerate(data.objects):
        dh, dm = detections(r, i, "head"), detections(r, i, "mean")
        truth = set(objs)
        for colour, shape in truth:
            total += 1
            hit = any(d.colour == colour and d.shape == shape for d in dh)
            found["head"] += hit
            found["mean"] += any(d.colour == colour and d.shape == shape for d in dm)
            found["shape"] += any(d.shape == shape for d in dh)
            per_shape.setdefault(shape, []).append(int(hit))
        n_det += len(dh)
        tp_det += sum((d.colour, d.shape) in truth for d in dh)
    return JudgeAccuracy(
        images=len(data.images),
        pixel_accuracy=float((r.shapes == data.layouts).mean()),
        foreground_accuracy=float((r.shapes[fg] == data.layouts[fg]).mean()),
        miou=layout_miou(r.shapes, data.layouts),
        object_recall=found["head"] / max(total, 1),
        object_precision=tp_det / max(n_det, 1),
        object_recall_mean_colour=found["mean"] / max(total, 1),
        shape_recall=found["shape"] / max(total, 1),
        noise_false_positive_rate=fp,
        per_shape_recall={k: float(np.mean(v)) for k, v in sorted(per_shape.items())},
    )


def train_judge(data: Renders, steps: int, *, batch: int = 32, lr: float = 3e-3, width: int = 16,
                seed: int = 0) -> JudgeNet:
    """Train a JudgeNet on ground-truth renders (cross-entropy on both heads)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = JudgeNet(width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    x_all = to_tensor(data.images)
    lay = torch.from_numpy(data.layouts).long()
    col = torch.from_numpy(data.colours).long()
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=gen)
        x = x_all[idx]
        flip = torch.rand(batch, generator=gen) < 0.5  # every shape is left-right symmetric
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        ly = torch.where(flip[:, None, None], lay[idx].flip(2), lay[idx])
        cy = torch.where(flip[:, None, None], col[idx].flip(2), col[idx])
        x = augment(x, gen)
        neg = batch // 8  # the first eighth of each batch: noise labelled "nothing here"
        x[:neg] = noise_images(neg, x.shape[-1], gen)
        ly[:neg] = 0
        cy[:neg] = 0
        s_logits, c_logits, _ = net(x)
        loss = nn.functional.cross_entropy(s_logits, ly) + nn.functional.cross_entropy(c_logits, cy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net


@dataclass(frozen=True)
class JudgeSpec:
    data: DataConfig = field(default_factory=DataConfig)  # the generator's domain (size, shapes)
    train_images: int = 3000
    test_images: int = 500
    steps: int = 600
    width: int = 16
    seed: int = 0

    def key(self) -> str:
        return (f"judge-v{VERSION}-{judge_domain(self.data).key()}-n{self.train_images}"
                f"-k{self.steps}-w{self.width}-seed{self.seed}")


def load_or_train(spec: JudgeSpec, cache_dir: Path) -> tuple[JudgeNet, JudgeAccuracy, bool]:
    """The judge for `spec` from `cache_dir`, training (and caching) it when absent.

    Returns:
        The net, its held-out accuracy and whether it came from the cache.
    """
    d = Path(cache_dir) / spec.key()
    if (d / "weights.pt").is_file() and (d / "accuracy.json").is_file():
        net = JudgeNet(spec.width)
        net.load_state_dict(torch.load(d / "weights.pt", weights_only=True))
        net.eval()
        # Measured again (seconds), so the reading rules in judges.py are what is reported.
        return net, evaluate_judge(net, make_renders(spec.test_images, spec.data, spec.seed + 10_000)), True
    t0 = time.perf_counter()
    net = train_judge(make_renders(spec.train_images, spec.data, spec.seed), spec.steps,
                      width=spec.width, seed=spec.seed)
    seconds = time.perf_counter() - t0
    acc = evaluate_judge(net, make_renders(spec.test_images, spec.data, spec.seed + 10_000))
    d.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), d / "weights.pt")
    (d / "accuracy.json").write_text(json.dumps({**asdict(acc), "train_seconds": seconds},
                                                indent=1, sort_keys=True))
    (d / "spec.json").write_text(json.dumps(asdict(spec), indent=1, sort_keys=True, default=list))
    return net, acc, False
