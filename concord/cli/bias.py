"""`concord bias IMAGE "TEXT"`: is this image-text pair biased, and why? Asked of the bias
service over gRPC: the label, the calibrated probability, the text with its loaded words marked,
the visual and inconsistency cues, and the rationale. `-c TEXT` adds the text-reliance probe."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from concord.clients.bias import BiasVerdict, TextReliance
from concord.wire import ModelId

console = Console()


def marked(text: str, verdict: BiasVerdict) -> Text:
    """The text with each linguistic cue's words in [brackets] (and red where colour shows)."""
    spans = sorted(c.span for c in verdict.linguistic if c.span is not None)
    out = Text()
    at = 0
    for start, end in spans:
        if start < at or not 0 <= start < end <= len(text):
            continue  # overlapping or out of range: the table still lists it
        out.append(text[at:start])
        out.append(f"[{text[start:end]}]", style="bold red")
        at = end
    out.append(text[at:])
    return out


def _verdict_json(verdict: BiasVerdict) -> dict[str, Any]:
    return {**asdict(verdict), "cues": [asdict(c) for c in verdict.cues]}


def _as_json(
    text: str, verdict: BiasVerdict, model: ModelId, probe: TextReliance | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": text,
        "model": {"name": model.name, "version": model.version},
        **_verdict_json(verdict),
    }
    if probe is not None:
        out["probe"] = {
            "text_reliance": probe.text_reliance,
            "counterfactuals": [_verdict_json(v) for v in probe.counterfactuals],
        }
    return out


def _print(
    text: str,
    verdict: BiasVerdict,
    model: ModelId,
    probe: TextReliance | None,
    counterfactuals: list[str],
) -> None:
    colour = "red" if verdict.biased else "green"
    console.print(
        f"[bold {colour}]{verdict.label.upper()}[/]  P(biased) = {verdict.probability:.3f} "
        f"(threshold {verdict.threshold:.2f}, inconsistency {verdict.inconsistency:.3f}) "
        f"[dim]{model}[/]"
    )
    console.print(Text("text: ") + marked(text, verdict))
    if verdict.cues:
        cues = Table(title="cues (weight: P(biased) drop when occluded; inconsistency: its P)")
        for column in ("kind", "where", "weight", "description"):
            cues.add_column(column)
        for c in verdict.cues:
            if c.span is not None:
                where = f"{c.text!r} {c.span[0]}-{c.span[1]}"
            elif c.region is not None:
                where = "region " + ",".join(f"{v:.2f}" for v in c.region)
            else:
                where = ""
            cues.add_row(c.kind, where, f"{c.weight:+.3f}", c.description)
        console.print(cues)
    console.print(Text(f"rationale: {verdict.rationale or '(none)'}"))
    if probe is not None:
        table = Table(title=f"text reliance {probe.text_reliance:.3f} (same image, altered text)")
        for column in ("text", "label", "P(biased)"):
            table.add_column(column)
        table.add_row(text, verdict.label, f"{verdict.probability:.3f}")
        for alt, v in zip(counterfactuals, probe.counterfactuals, strict=True):
            table.add_row(alt, v.label, f"{v.probability:.3f}")
        console.print(table)


def bias(
    image: Annotated[Path, typer.Argument(help="The image file (PNG, JPEG or WebP).")],
    text: Annotated[str, typer.Argument(help="The caption, headline or ad text.")],
    counterfactuals: Annotated[
        list[str] | None,
        typer.Option(
            "--counterfactual",
            "-c",
            help="An altered text for the same image (repeat for more): adds the text-reliance "
            "probe.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
    host: Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")] = None,
) -> None:
    """Is the pair biased? Label, P(biased), the cues (loaded words marked) and the rationale."""
    from concord.clients import Concord
    from concord.config import load_settings
    from concord.errors import ConcordError

    if not image.is_file():
        raise typer.BadParameter(f"{image} is not a file", param_hint="IMAGE")
    data = image.read_bytes()
    alternatives = list(counterfactuals or [])
    probe = None
    try:
        with Concord(load_settings(), host) as client:
            detection = client.detect_bias([(data, text)])
            if alternatives:
                probe = client.probe_text_reliance(data, text, alternatives)
    except ConcordError as err:
        console.print(Text(f"{err.status}: {err.message}", style="red"))
        raise typer.Exit(1) from None
    (verdict,) = detection.verdicts
    if as_json:
        typer.echo(json.dumps(_as_json(text, verdict, detection.model, probe), indent=2))
    else:
        _print(text, verdict, detection.model, probe, alternatives)


def register(app: typer.Typer) -> None:
    """Add `bias` to the `concord` app."""
    app.command("bias")(bias)
