"""`concord generate` and `concord customize`: text -> image (+ its layout PNG and legend),
and teaching the generator a concept from reference images, over the generator's gRPC API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from concord.clients import Connection, connect
from concord.clients.generator import (
    SAMPLERS,
    AlignedGeneration,
    GeneratedImage,
    GeneratorClient,
)
from concord.clients.generator import Progress as StepProgress
from concord.config import Settings, load_settings
from concord.errors import ConcordError
from concord.media import colour_layout, layout_colour

console = Console()
SAMPLER_CHOICES = ", ".join(SAMPLERS)  # for --sampler help and errors

SWATCH = 14  # legend row height in pixels


def _client(
    settings: Settings, host: str | None, timeout: float
) -> tuple[GeneratorClient, Connection]:
    conn = connect("generator", settings, host)
    return GeneratorClient(conn.channel, conn.metadata, timeout), conn


def layout_png(image: GeneratedImage, path: Path, min_side: int = 128) -> dict[int, str]:
    """Write the coloured class map (scaled up, nearest) with a legend of the classes present.

    Returns:
        class id -> name for the classes drawn in the legend.
    """
    from PIL import Image, ImageDraw

    assert image.layout is not None
    present = image.classes_present()
    scale = max(1, -(-min_side // max(image.layout.shape)))
    coloured = Image.fromarray(colour_layout(image.layout)).resize(
        (image.layout.shape[1] * scale, image.layout.shape[0] * scale), Image.Resampling.NEAREST
    )
    legend_width = 8 + 7 * max((len(n) for n in present.values()), default=4) + SWATCH + 8
    height = max(coloured.height, SWATCH * len(present) + 8)
    sheet = Image.new("RGB", (coloured.width + legend_width, height), (255, 255, 255))
    sheet.paste(coloured, (0, 0))
    draw = ImageDraw.Draw(sheet)
    for row, (class_id, name) in enumerate(present.items()):
        x, y = coloured.width + 6, 4 + row * SWATCH
        colour = layout_colour(class_id)
        draw.rectangle((x, y, x + SWATCH - 4, y + SWATCH - 4), fill=colour, outline=(0, 0, 0))
        draw.text((x + SWATCH, y), name, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return present


def layout_path(out: Path) -> Path:
    """x.png -> x.layout.png (beside the image)."""
    return out.with_name(f"{out.stem}.layout{out.suffix or '.png'}")


def _outputs(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


def generate(
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts (one image each).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Image file (PROMPT i>0: OUT-i.png).")
    ] = Path("generated.png"),
    seed: Annotated[int, typer.Option(help="Image i is drawn with seed + i.")] = 0,
    steps: Annotated[int, typer.Option(help="Denoising steps (0: server default).")] = 0,
    guidance: Annotated[
        float, typer.Option(help="Classifier-free guidance scale (0: server default).")
    ] = 0.0,
    sampler: Annotated[str | None, typer.Option(help=f"One of {SAMPLER_CHOICES}.")] = None,
    concept: Annotated[str, typer.Option(help="A registered concept to use.")] = "",
    unwanted: Annotated[
        list[str] | None, typer.Option(help="DECOR: token to project away (repeatable).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="DECOR projection strength 0..1.")] = 0.0,
    directions: Annotated[int, typer.Option(help="DECOR singular directions removed.")] = 0,
    scale: Annotated[int, typer.Option(help="Upscale the saved image by this factor.")] = 1,
    aligned: Annotated[
        bool,
        typer.Option(
            "--aligned",
            help="Audit each image with the scorer and regenerate (new seed, more guidance, "
            "flagged words emphasised) until it passes; prints each try's audit.",
        ),
    ] = False,
    max_tries: Annotated[
        int, typer.Option(help="With --aligned: tries per prompt, 1..8 (0: server default 4).")
    ] = 0,
    min_score: Annotated[
        float,
        typer.Option(help="With --aligned: pass threshold on P(aligned), 0..1 (0: 0.5)."),
    ] = 0.0,
    host: Annotated[str | None, typer.Option(help="Generator host (default: serving.host)")] = None,
) -> None:
    """Generate an image per prompt: writes OUT and OUT's .layout.png, prints the legend."""
    if sampler is not None and sampler not in SAMPLERS:
        raise typer.BadParameter(f"must be one of {SAMPLER_CHOICES}", param_hint="--sampler")
    if scale < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--scale")
    if not aligned and (max_tries or min_score):
        raise typer.BadParameter("needs --aligned", param_hint="--max-tries/--min-score")
    if aligned and (concept or unwanted):
        raise typer.BadParameter("not with --aligned", param_hint="--concept/--unwanted")
    client, conn = _client(load_settings(), host, timeout=3600.0)
    if aligned:
        try:
            results = [
                client.generate_aligned(
                    prompt,
                    max_tries=max_tries,
                    min_score=min_score,
                    # prompt i's tries draw seeds seed + i * 8 + k (8: the most tries)
                    seed=seed + i * 8,
                    steps=steps,
                    guidance_scale=guidance,
                    sampler=sampler,  # type: ignore[arg-type]
                )
                for i, prompt in enumerate(prompts)
            ]
        except ConcordError as err:
            console.print(f"[red]{err.status}: {err.message}[/]")
            raise typer.Exit(1) from None
        finally:
            conn.close()
        for prompt, result, path in zip(prompts, results, _outputs(out, len(prompts)), strict=True):
            _print_trail(prompt, result)
            _save_with_layout(result.image, path, prompt, scale)
        return
    columns = (TextColumn("[bold]denoising"), BarColumn(), TaskProgressColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("denoising", total=None)

            def on_progress(p: StepProgress) -> None:
                bar.update(task, total=p.total_steps, completed=p.step)

            images = client.generate(
                prompts,
                seed=seed,
                steps=steps,
                guidance_scale=guidance,
                sampler=sampler,  # type: ignore[arg-type]
                concept=concept,
                unwanted=unwanted or (),
                alpha=alpha,
                directions=directions,
                on_progress=on_progress,
            )
    except ConcordError as err:
        console.print(f"[red]{err.status}: {err.message}[/]")
        raise typer.Exit(1) from None
    finally:
        conn.close()
    for image, path in zip(images, _outputs(out, len(images)), strict=True):
        _save_with_layout(image, path, prompts[image.prompt_index], scale)


def _save_with_layout(image: GeneratedImage, path: Path, prompt: str, scale: int) -> None:
    _save(image, path, scale)
    console.print(f"{path}: {prompt!r} (seed {image.seed}, {image.model})")
    if image.layout is None:
        console.print("  (image-only model: no layout)")
        return
    present = layout_png(image, layout_path(path))
    total = image.layout.size
    console.print(f"  layout: {layout_path(path)}")
    for class_id, name in present.items():
        share = float((image.layout == class_id).sum()) / total
        console.print(f"    {class_id:>3} {name:<12} {share:6.1%}")


def _print_trail(prompt: str, result: AlignedGeneration) -> None:
    """One line per try: seed, guidance, P(aligned), flagged words with their spans."""
    verdict = "[green]passed[/]" if result.passed else "[red]did not pass[/]"
    console.print(
        f"{prompt!r}: {verdict} in {len(result.tries)} tries "
        f"(pass: no flagged word and P(aligned) > {result.min_score:g}; scorer {result.scorer})"
    )
    for t in result.tries:
        flagged = ", ".join(f"{w.word} [{w.span[0]}:{w.span[1]}]" for w in t.flagged) or "none"
        best = "  <- best" if t.index == result.best_try else ""
        console.print(
            f"  try {t.index + 1}: seed {t.seed}, guidance {t.guidance_scale:g}, "
            f"P(aligned) {t.score.aligned_probability:.3f}, flagged: {flagged}"
            f"{' (passed)' if t.passed else ''}{best}"
        )
        if t.prompt != prompt:
            console.print(f"         drawn from {t.prompt!r}")


def _save(image: GeneratedImage, path: Path, scale: int) -> None:
    from PIL import Image

    pixels = Image.fromarray(image.array)
    if scale > 1:
        pixels = pixels.resize(
            (pixels.width * scale, pixels.height * scale), Image.Resampling.NEAREST
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels.save(path)


def customize(
    name: Annotated[str, typer.Argument(help="The new concept's name (one lowercase word).")],
    images: Annotated[list[Path], typer.Argument(help="Reference images of the concept.")],
    class_word: Annotated[str, typer.Option(help="What kind of thing it is (e.g. shape).")] = "",
    steps: Annotated[int, typer.Option(help="Fine-tuning steps (0: server default).")] = 0,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    host: Annotated[str | None, typer.Option(help="Generator host (default: serving.host)")] = None,
) -> None:
    """Teach the generator a concept from reference images (a job; --wait follows it)."""
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise typer.BadParameter(f"not files: {', '.join(missing)}", param_hint="IMAGES")
    client, conn = _client(load_settings(), host, timeout=60.0)
    try:
        job = client.customize(name, images, class_word=class_word, steps=steps)
        console.print(f"job {job.id}: {job.state} (concept {job.concept!r})")
        if not wait:
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("queued", total=1.0)
            job = client.wait_job(
                job.id,
                timeout=timeout,
                on_update=lambda j: bar.update(
                    task, completed=j.progress, description=j.state.lower()
                ),
            )
    except (ConcordError, TimeoutError) as err:
        message = f"{err.status}: {err.message}" if isinstance(err, ConcordError) else str(err)
        console.print(f"[red]{message}[/]")
        raise typer.Exit(1) from None
    finally:
        conn.close()
    colour = "green" if job.state == "SUCCEEDED" else "red"
    console.print(f"[{colour}]job {job.id}: {job.state}[/] {job.message}")
    if job.state != "SUCCEEDED":
        raise typer.Exit(1)


def concepts(
    host: Annotated[str | None, typer.Option(help="Generator host (default: serving.host)")] = None,
) -> None:
    """List the registered concepts."""
    client, conn = _client(load_settings(), host, timeout=60.0)
    try:
        found = client.list_concepts()
    except ConcordError as err:
        console.print(f"[red]{err.status}: {err.message}[/]")
        raise typer.Exit(1) from None
    finally:
        conn.close()
    for c in found:
        console.print(f"{c.name}\t{c.class_word}\t{c.model}\t{c.reference_count} references")


def register(app: typer.Typer) -> None:
    """Add the generator commands to the `concord` app."""
    app.command("generate")(generate)
    app.command("customize")(customize)
    app.command("concepts")(concepts)
