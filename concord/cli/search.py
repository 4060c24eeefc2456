"""`concord search "text"`: search a collection over gRPC, print the hits and optionally draw
them as a contact sheet (images read back from each hit's payload `uri`); with `--explain`,
each image hit's query words marked as the image supports (+) or contradicts (!) them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from concord.clients import Concord, Hit, HitExplanation
from concord.config import load_settings

console = Console()


def _print_hits(query: str, hits: tuple[Hit, ...], collection: str, model: str) -> None:
    table = Table(title=f"{query!r} in {collection} ({model})")
    for column in ("#", "id", "score", "modality", "payload"):
        table.add_column(column)
    for rank, hit in enumerate(hits, 1):
        payload = json.dumps(dict(hit.payload), ensure_ascii=False, sort_keys=True)
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", hit.modality, payload)
    console.print(table)


# How --explain marks a query word: a sign that survives plain output, and a colour.
MARKS = {"supports": ("+", "bold green"), "contradicts": ("!", "bold red"), "neutral": ("", "")}


def marked_query(query: str, explanation: HitExplanation) -> Text:
    """Returns: the query with each explained word marked in place (`+red`, `!circle`)."""
    text, at = Text(), 0
    for word in sorted(explanation.words, key=lambda w: w.span):
        start, end = word.span
        if start < at or end > len(query):  # spans point into the query; skip anything else
            continue
        sign, style = MARKS[word.verdict]
        text.append(query[at:start])
        text.append(sign + query[start:end], style=style)
        at = end
    text.append(query[at:])
    return text


def _print_explanations(query: str, hits: tuple[Hit, ...], scorer: str) -> None:
    console.print(f"explained by {scorer} (+ the image supports the word, ! contradicts it)")
    for rank, hit in enumerate(hits, 1):
        why = hit.explanation
        if why is None:
            continue
        line = Text(f"{rank}. ")
        if why.unavailable:
            line.append(f"not explained: {why.unavailable}", style="dim")
        else:
            line.append_text(marked_query(query, why))
            if why.score is not None:
                line.append(f"  P(aligned) {why.score.aligned_probability:.2f}")
        console.print(line)


def _hit_image(hit: Hit, size: int) -> object:
    """The hit's picture: payload `uri` (a local path or file:// URI) for images, else a tile
    with its text. Indexing stores no pixels, so the indexer records where the image lives."""
    from PIL import Image, ImageDraw

    uri = str(hit.payload.get("uri", ""))
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    if hit.modality == "image" and uri and path.is_file():
        with Image.open(path) as image:
            return image.convert("RGB").resize((size, size))
    tile = Image.new("RGB", (size, size), (235, 235, 235))
    label = str(hit.payload.get("text", "")) or f"no image\n{uri or hit.id[:8]}"
    ImageDraw.Draw(tile).multiline_text((4, 4), _wrap(label, size // 7), fill=(0, 0, 0))
    return tile


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(width, 8))[:8])


def _contact_sheet(hits: tuple[Hit, ...], out: Path, size: int = 128, columns: int = 5) -> Path:
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(hits) // columns))
    caption = 16
    sheet = Image.new("RGB", (columns * size, rows * (size + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, hit in enumerate(hits):
        x, y = (i % columns) * size, (i // columns) * (size + caption)
        sheet.paste(_hit_image(hit, size), (x, y))  # type: ignore[arg-type]
        draw.text((x + 2, y + size + 2), f"{i + 1}. {hit.score:.3f}", fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def search(
    query: Annotated[str, typer.Argument(help="The text to search for.")],
    collection: Annotated[
        str, typer.Option(help="Collection (default: the encoder model's own).")
    ] = "",
    top_k: Annotated[int, typer.Option("--top-k", help="Number of hits.")] = 10,
    target: Annotated[str, typer.Option(help="image, text or any.")] = "any",
    rerank: Annotated[bool, typer.Option(help="Token late-interaction rerank.")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Mark the query words each image hit supports (+) or contradicts (!) "
            "(asks the scorer; top-k <= 20; images indexed with thumbnails).",
        ),
    ] = False,
    contact_sheet: Annotated[
        Path | None, typer.Option("--contact-sheet", help="Write a PNG grid of the hits.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")] = None,
) -> None:
    """Search a collection by text over gRPC and print the hits (id, score, payload)."""
    from concord.errors import ConcordError

    if target not in ("image", "text", "any"):
        raise typer.BadParameter(f"--target must be image, text or any, not {target!r}")
    try:
        with Concord(load_settings(), host) as client:
            result = client.search_text(
                query,
                collection=collection,
                top_k=top_k,
                target=target,
                rerank=rerank,
                explain=explain,
            )
    except ConcordError as err:
        console.print(f"[red]{err.status}: {err.message}[/]")
        raise typer.Exit(1) from None
    _print_hits(query, result.hits, result.collection, str(result.model))
    if explain:
        _print_explanations(query, result.hits, str(result.scorer_model or "the scorer"))
    if contact_sheet is not None:
        console.print(f"contact sheet: {_contact_sheet(result.hits, contact_sheet)}")


def register(app: typer.Typer) -> None:
    """Add `search` to the `concord` app."""
    app.command()(search)
