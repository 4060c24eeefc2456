"""Contact sheets: a PNG grid of a dataset's samples with their captions and layouts."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipelines.data.vocab import CLASS_NAMES


@dataclass(frozen=True)
class SheetRow:
    panels: list[tuple[str, np.ndarray]]  # (title, image) shown left to right
    text: str  # caption(s) and labels, wrapped beside the panels
    notes: dict[str, str] = field(default_factory=dict)


def render_sheet(rows: list[SheetRow], title: str, out: Path, text_width: int = 70) -> Path:
    """Draw `rows` into one PNG at `out`.

    Returns:
        The path written.
    """
    if not rows:
        raise ValueError("no samples to draw")
    n_panels = max(len(r.panels) for r in rows)
    text_cols = 3
    texts = ["\n".join(textwrap.fill(t, text_width) for t in row.text.split("\n")) for row in rows]
    # A row is as tall as its wrapped text needs, and never shorter than an image panel.
    heights = [max(1.75, 0.13 * (t.count("\n") + 1) + 0.3) for t in texts]
    fig, axes = plt.subplots(len(rows), n_panels + 1, squeeze=False,
                             figsize=(1.6 * n_panels + 1.6 * text_cols, sum(heights) + 0.6),
                             gridspec_kw={"width_ratios": [1] * n_panels + [text_cols],
                                          "height_ratios": heights})
    for r, row in enumerate(rows):
        for c in range(n_panels):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(row.panels):
                name, img = row.panels[c]
                ax.imshow(img, interpolation="nearest", cmap="gray" if img.ndim == 2 else None)
                ax.set_title(name, fontsize=7)
        ax = axes[r][n_panels]
        ax.set_axis_off()
        ax.text(0.0, 0.5, texts[r], fontsize=6.5, va="center", ha="left", family="monospace")
    legend = "layout classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(CLASS_NAMES))
    fig.suptitle(f"{title}\n{legend}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
