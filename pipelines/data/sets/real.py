"""Real-pixel smoke sets from images shipped inside packages, loaded offline:
scikit-learn digits with captions, and scikit-image sample photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import DatasetWriter, Manifest, decode_png, item_rng, read_jsonl
from pipelines.data.vocab import COUNT_WORDS

DIGIT_WORDS = {0: "zero", **COUNT_WORDS, 6: "six", 7: "seven", 8: "eight", 9: "nine"}
# Only images whose files ship in the scikit-image wheel; others would need a download.
SKIMAGE_SAMPLES: dict[str, tuple[str, list[str]]] = {
    "astronaut": ("astronaut.png", ["an astronaut in a spacesuit in front of a flag",
                                    "a portrait of a smiling astronaut"]),
    "camera": ("camera.png", ["a black and white photo of a man with a camera on a tripod",
                              "a photographer outdoors, grayscale"]),
    "coffee": ("coffee.png", ["a cup of coffee on a saucer", "a coffee cup seen from above"]),
    "chelsea": ("chelsea.png", ["a ginger cat looking to the side", "a close-up photo of a tabby cat"]),
    "rocket": ("rocket.jpg", ["a rocket on a launch pad", "a space launch vehicle before lift-off"]),
    "coins": ("coins.png", ["old coins on a dark surface, grayscale", "a grid of coins"]),
    "moon": ("moon.png", ["the surface of the moon with craters", "a grayscale photo of lunar craters"]),
    "horse": ("horse.png", ["a black silhouette of a horse", "the outline of a running horse"]),
    "page": ("page.png", ["a scanned page of printed text", "text on a page, unevenly lit"]),
    "text": ("text.png", ["printed letters on a textured background", "a photo of text"]),
    "brick": ("brick.png", ["a brick wall texture", "a close-up of bricks"]),
    "grass": ("grass.png", ["a grass texture", "blades of grass close up"]),
    "gravel": ("gravel.png", ["a gravel texture", "small stones on the ground"]),
    "hubble_deep_field": ("hubble_deep_field.jpg",
                          ["galaxies in deep space", "a telescope image of the sky"]),
    "immunohistochemistry": ("ihc.png", ["stained tissue under a microscope", "a microscope slide of cells"]),
    "logo": ("logo.png", ["the scikit-image logo", "a snake logo with text"]),
}


def _to_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to `size`, as uint8 RGB."""
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))


def build_digits(args: BuildArgs) -> Manifest:
    from sklearn.datasets import load_digits

    d = load_digits()
    w = DatasetWriter(args.out, "digits", DIGITS.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts,
                       "source": "sklearn.datasets.load_digits"},
                      args.overwrite)
    rng = item_rng(args.seed, "digits", "split", 0)
    order = rng.permutation(len(d.target))
    n_test = args.counts["test"]
    splits = {"test": order[:n_test], "train": order[n_test : n_test + args.counts["train"]]}
    for split, idx in splits.items():
        records = []
        for i in sorted(int(k) for k in idx):
            label = int(d.target[i])
            pixels = (d.images[i] / 16.0 * 255).astype(np.uint8)
            # Ink is dark on white, the way a digit on paper looks.
            img = _to_rgb(255 - pixels, args.image_size)
            rel = w.put_png(f"images/{split}/{i:04d}.png", img)
            word = DIGIT_WORDS[label]
            records.append({"id": f"{split}/{i:04d}", "image": rel, "label": label,
                            "captions": [f"a handwritten digit {word}", f"the number {label} written by hand",
                                         f"a blurry handwritten {word} on white paper"]})
        w.put_jsonl(f"{split}.jsonl", records)
    return w.finish({k: len(v) for k, v in splits.items()})


def build_skimage(args: BuildArgs) -> Manifest:
    import skimage.data as data

    w = DatasetWriter(args.out, "skimage", SKIMAGE.version, args.seed,
                      {"image_size": args.image_size, "source": "skimage.data (bundled files only)"},
                      args.overwrite)
    records = []
    for name, (filename, captions) in sorted(SKIMAGE_SAMPLES.items()):
        if not (Path(data.data_dir) / filename).is_file():
            continue  # not bundled in this install: skip rather than download
        img = _to_rgb(np.asarray(getattr(data, name)()), args.image_size)
        records.append({"id": name, "image": w.put_png(f"images/{name}.png", img), "captions": captions})
    w.put_jsonl("test.jsonl", records[: args.counts.get("test", len(records))])
    return w.finish({"test": min(len(records), args.counts.get("test", len(records)))})


def _sheet(split: str) -> object:
    def sheet(root: Path, n: int) -> list[SheetRow]:
        return [SheetRow([("image", decode_png(Path(root) / r["image"]))], "\n".join(r["captions"]))
                for r in read_jsonl(Path(root) / f"{split}.jsonl")[:n]]
    return sheet


DIGITS = DatasetSpec(
    name="digits", version="1.0", description="scikit-learn handwritten digits with captions.",
    presets={"tiny": {"train": 20, "test": 10}, "small": {"train": 500, "test": 200},
             "default": {"train": 1437, "test": 360}, "large": {"train": 1437, "test": 360}},
    build=build_digits, sheet=_sheet("test"),  # type: ignore[arg-type]
)
SKIMAGE = DatasetSpec(
    name="skimage", version="1.0", description="scikit-image bundled sample photographs with captions.",
    presets={"tiny": {"test": 4}, "small": {"test": 16}, "default": {"test": 16}, "large": {"test": 16}},
    build=build_skimage, sheet=_sheet("test"),  # type: ignore[arg-type]
)
