"""`concord link`, `concord kb upsert|ls|rm` and `concord align`: the linker service over gRPC.

    concord link "I saw the red Shape 1 today" --span 16:23 --image photo.png --kb shapes
    concord kb upsert entities.jsonl --kb shapes     # one JSON entity per line
    concord kb ls
    concord kb rm shapes
    concord align g1.json g2.json --seeds seeds.tsv  # graphs: {"entities": [...], "triples": [...]}

Entity JSON: {"id", "name", "description", "attributes": {...}, "images": [paths relative to
the file]}. Seeds: a JSON list of [source_id, target_id] pairs, or one pair per line
(tab, comma or space separated).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from concord.clients import Concord
    from concord.clients.linker import AlignedPair, Candidate, Entity, Graph, Links

console = Console()
kb_app = typer.Typer(help="Knowledge bases of the linker: upsert entities, list, remove.")
UPSERT_BATCH = 256  # entities per UpsertEntities call
SPAN_RE = re.compile(r"^(\d+):(\d+)$")

HostOption = Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]


def _client(host: str | None) -> Concord:
    from concord.clients import Concord
    from concord.config import load_settings

    return Concord(load_settings(), host)


def _fail(err: Any) -> typer.Exit:
    console.print(f"[red]{err.status}: {err.message}[/]")
    return typer.Exit(1)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ----------------------------------------------------------------------------- link


def _print_links(sentence: str, span: tuple[int, int], kb: str, links: Links) -> None:
    mention = sentence[span[0] : span[1]]
    table = Table(title=f"{mention!r} in {kb} ({links.model}); '-': the matcher does not apply")
    for column in ("#", "entity", "name", "score", "text coarse", "text fine", "visual", "cross"):
        table.add_column(column)
    for rank, c in enumerate(links.candidates[0], 1):
        table.add_row(
            str(rank),
            c.entity_id,
            c.name,
            f"{c.score:.3f}",
            _score(c.text_coarse),
            _score(c.text_fine),
            _score(c.visual),
            _score(c.cross_modal),
        )
    console.print(table)


def _candidate_json(c: Candidate) -> dict[str, Any]:
    return asdict(c)


def link(
    sentence: Annotated[str, typer.Argument(help="The sentence the mention is in.")],
    span: Annotated[str, typer.Option(help="The mention's characters START:END (end exclusive).")],
    kb: Annotated[str, typer.Option("--kb", help="The knowledge base to link against.")],
    image: Annotated[
        Path | None, typer.Option(help="An image that comes with the sentence.")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Candidates to show.")] = 5,
    as_json: JsonOption = False,
    host: HostOption = None,
) -> None:
    """Link the mention SENTENCE[START:END] (and an optional image) to entities of a KB."""
    from concord.clients.linker import Mention
    from concord.errors import ConcordError

    match = SPAN_RE.match(span)
    if match is None:
        raise typer.BadParameter(f"{span!r} is not START:END", param_hint="--span")
    start, end = int(match[1]), int(match[2])
    if image is not None and not image.is_file():
        raise typer.BadParameter(f"{image} is not a file", param_hint="--image")
    mention = Mention(sentence, (start, end), image.read_bytes() if image is not None else None)
    try:
        with _client(host) as client:
            links = client.link(kb, [mention], top_k=top_k)
    except ConcordError as err:
        raise _fail(err) from None
    if as_json:
        out = {
            "mention": sentence[start:end],
            "knowledge_base": kb,
            "model": {"name": links.model.name, "version": links.model.version},
            "candidates": [_candidate_json(c) for c in links.candidates[0]],
        }
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_links(sentence, (start, end), kb, links)


# ----------------------------------------------------------------------------- kb


def _read_entities(path: Path) -> Iterator[tuple[int, Entity]]:
    """(line number, entity) for every non-empty line of a JSONL file."""
    from concord.clients.linker import Entity

    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as err:
                raise typer.BadParameter(f"line {number} is not JSON ({err})") from None
            if not isinstance(data, dict):
                raise typer.BadParameter(f"line {number} is not a JSON object")
            yield number, Entity.from_dict(data, path.parent)


def _batches(items: Iterator[tuple[int, Entity]]) -> Iterator[list[tuple[int, Entity]]]:
    batch: list[tuple[int, Entity]] = []
    for item in items:
        batch.append(item)
        if len(batch) == UPSERT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@kb_app.command("upsert")
def kb_upsert(
    file: Annotated[Path, typer.Argument(help="Entities, one JSON object per line.")],
    kb: Annotated[str, typer.Option("--kb", help="The knowledge base (created if missing).")],
    host: HostOption = None,
) -> None:
    """Add or replace the entities of FILE (JSONL) in a knowledge base."""
    from concord.errors import ConcordError, InvalidArgument

    if not file.is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    total = 0
    try:
        with _client(host) as client:
            for batch in _batches(_read_entities(file)):
                try:
                    total += client.upsert_entities(kb, [e for _, e in batch])
                except InvalidArgument as err:
                    for v in err.violations:  # name the file's line, not the batch's index
                        found = re.match(r"^entities\[(\d+)\](.*)$", v.field)
                        where = f"line {batch[int(found[1])][0]}{found[2]}" if found else v.field
                        console.print(f"[red]{where}: {v.description}[/]")
                    console.print(f"[red]INVALID_ARGUMENT: {total} entities upserted before[/]")
                    raise typer.Exit(1) from None
    except ConcordError as err:
        raise _fail(err) from None
    console.print(f"upserted {total} entities into {kb}")


@kb_app.command("ls")
def kb_ls(as_json: JsonOption = False, host: HostOption = None) -> None:
    """List the knowledge bases with their entity counts."""
    from concord.errors import ConcordError

    try:
        with _client(host) as client:
            listed = client.list_knowledge_bases()
    except ConcordError as err:
        raise _fail(err) from None
    if as_json:
        rows = [{"name": k.name, "entities": k.entities, "model": str(k.model)} for k in listed]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="knowledge bases")
    for column in ("name", "entities", "model"):
        table.add_column(column)
    for k in listed:
        table.add_row(k.name, str(k.entities), str(k.model))
    console.print(table if listed else "no knowledge bases")


@kb_app.command("rm")
def kb_rm(
    name: Annotated[str, typer.Argument(help="The knowledge base to drop.")],
    host: HostOption = None,
) -> None:
    """Drop a knowledge base and every entity in it."""
    from concord.errors import ConcordError

    try:
        with _client(host) as client:
            client.delete_knowledge_base(name)
    except ConcordError as err:
        raise _fail(err) from None
    console.print(f"deleted knowledge base {name}")


# ----------------------------------------------------------------------------- align


def _read_graph(path: Path) -> Graph:
    from concord.clients.linker import Graph

    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    try:
        data = json.loads(path.read_text())
        return Graph.from_dict(data, path.parent)
    except (ValueError, KeyError, TypeError) as err:
        raise typer.BadParameter(f"{path} is not a graph ({err!r})") from None


def read_seeds(path: Path) -> list[tuple[str, str]]:
    """Seed pairs from a JSON list ([[s, t], ...] or [{"source_id", "target_id"}, ...]) or
    from lines of two ids (tab, comma or space separated; `#` starts a comment)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="--seeds")
    text = path.read_text()
    if text.lstrip().startswith("["):
        pairs = []
        for item in json.loads(text):
            if isinstance(item, dict):
                pairs.append((str(item["source_id"]), str(item["target_id"])))
            else:
                pairs.append((str(item[0]), str(item[1])))
        return pairs
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[\t, ]+", line) if p]
        if len(parts) != 2:
            raise typer.BadParameter(f"line {number} is not two ids", param_hint="--seeds")
        pairs.append((parts[0], parts[1]))
    return pairs


def _print_pairs(pairs: list[AlignedPair], limit: int) -> None:
    table = Table(title=f"{len(pairs)} aligned pairs (best first; CSLS score)")
    for column in ("source", "target", "score"):
        table.add_column(column)
    for p in pairs[:limit]:
        table.add_row(p.source_id, p.target_id, f"{p.score:.4f}")
    console.print(table)
    if len(pairs) > limit:
        console.print(f"... {len(pairs) - limit} more (--limit, or --out FILE for all)")


def align(
    source: Annotated[Path, typer.Argument(help="The source graph (JSON).")],
    target: Annotated[Path, typer.Argument(help="The target graph (JSON).")],
    seeds: Annotated[Path, typer.Option(help="Known pairs: JSON or lines of two ids.")],
    top_k: Annotated[int, typer.Option(help="Target candidates per source entity.")] = 1,
    job: Annotated[
        bool, typer.Option("--job", help="Run as a job on Kafka (for large graphs) and wait.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Pairs to print.")] = 20,
    out: Annotated[Path | None, typer.Option(help="Write every pair here (TSV).")] = None,
    as_json: JsonOption = False,
    host: HostOption = None,
) -> None:
    """Align the entities of two knowledge graphs from seed pairs (UMAEA)."""
    from concord.errors import ConcordError

    g1, g2, pairs_in = _read_graph(source), _read_graph(target), read_seeds(seeds)
    try:
        with _client(host) as client:
            if job:
                submitted = client.submit_align_job(g1, g2, pairs_in, top_k=top_k)
                console.print(f"job {submitted.id} {submitted.state}")

                def show(update: Any) -> None:
                    console.print(f"  {update.state} {update.progress:.0%} {update.message}")

                done = client.wait_align_job(submitted.id, on_update=show, poll=1.0)
                if done.state != "SUCCEEDED":
                    console.print(f"[red]job {done.id} {done.state}: {done.message}[/]")
                    raise typer.Exit(1)
                pairs = client.align_result(done.id)
            else:
                pairs = list(client.align(g1, g2, pairs_in, top_k=top_k))
    except ConcordError as err:
        raise _fail(err) from None
    if out is not None:
        out.write_text("".join(f"{p.source_id}\t{p.target_id}\t{p.score:.6f}\n" for p in pairs))
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in pairs], indent=2))
    else:
        _print_pairs(pairs, limit)


def register(app: typer.Typer) -> None:
    """Add `link`, `align` and the `kb` group to the `concord` app."""
    app.command("link")(link)
    app.command("align")(align)
    app.add_typer(kb_app, name="kb")
