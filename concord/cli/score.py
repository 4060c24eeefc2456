"""`concord score IMAGE "text"`: how well an image matches a text, and which words it
contradicts, asked of the scorer service over gRPC."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from concord.clients.scorer import Misalignment, PairScore, ScorePair

console = Console()


def _as_json(explained: Misalignment, score: PairScore) -> dict[str, Any]:
    return {
        "text": explained.text,
        "model": {"name": explained.model.name, "version": explained.model.version},
        "score": asdict(score),
        "words": [asdict(w) for w in explained.words],
        "flagged": [w.word for w in explained.flagged],
    }


def _print(explained: Misalignment, score: PairScore) -> None:
    scores = Table(title=f"{explained.text!r} ({explained.model})")
    for column in ("metric", "value"):
        scores.add_column(column)
    for name, value in asdict(score).items():
        if value is not None:
            scores.add_row(name, f"{value:.4f}")
    console.print(scores)
    words = Table(title="words (negative attribution: the image contradicts the word)")
    for column in ("word", "span", "attribution", "similarity", "flagged"):
        words.add_column(column)
    for w in explained.words:
        flag = "[red]yes[/]" if w.misaligned else "no"
        span = f"{w.span[0]}-{w.span[1]}"
        words.add_row(w.word, span, f"{w.attribution:+.5f}", f"{w.similarity:.3f}", flag)
    console.print(words)
    flagged = ", ".join(repr(w.word) for w in explained.flagged) or "none"
    console.print(f"flagged words: {flagged}")


def score(
    image: Annotated[Path, typer.Argument(help="The image file (PNG, JPEG or WebP).")],
    text: Annotated[str, typer.Argument(help="The caption, prompt or ad text.")],
    references: Annotated[
        list[str] | None,
        typer.Option("--reference", "-r", help="A reference caption (repeat for more)."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Flag words with attribution below -THRESHOLD (0: default).")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
    host: Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")] = None,
) -> None:
    """Score how well IMAGE matches TEXT over gRPC: scores, probability, flagged words."""
    from concord.clients import Concord
    from concord.config import load_settings
    from concord.errors import ConcordError

    if not image.is_file():
        raise typer.BadParameter(f"{image} is not a file", param_hint="IMAGE")
    data = image.read_bytes()
    try:
        with Concord(load_settings(), host) as client:
            explained = client.explain(data, text, threshold=threshold)
            result = explained.score
            if references:
                (result,) = client.score([ScorePair(data, text, tuple(references))]).scores
    except ConcordError as err:
        console.print(f"[red]{err.status}: {err.message}[/]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_as_json(explained, result), indent=2))
    else:
        _print(explained, result)


def register(app: typer.Typer) -> None:
    """Add `score` to the `concord` app."""
    app.command("score")(score)
