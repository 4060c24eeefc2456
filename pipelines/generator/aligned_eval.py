"""Generate until aligned, measured: held-out Concord Scenes prompts go through the public
`GenerateAligned` RPC of a generator and a scorer served in this process (a real Deployment on
loopback ports, as `concord up` runs them), and the report says how often the scorer's audit
passes with 1 try vs up to N tries, and the mean audit score (calibrated P(aligned)) at 1 vs N.

Try 0 of an aligned run is exactly a single try (same seed, guidance and prompt), so the
1-try numbers come from the same runs, paired per prompt. A control run retries with new seeds
only (no emphasis, the same guidance): what plain best-of-N gives, beside what the emphasis and
the added guidance give.

    python -m pipelines.generator.aligned_eval \\
        --generator .cache/demo-build/generator --scorer .cache/demo-build/scorer/package \\
        --prompts 40 --max-tries 4

writes reports/generator_aligned.md and .json (rows {metric, split, method, value, baseline},
commit, data seed, machine).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from concord.checkpoints.generator import is_generator_dir
from concord.clients import Concord
from concord.clients.generator import AlignedGeneration
from concord.config import Settings, load_settings
from concord.ports import free_ports as _free_ports
from pipelines.evaluate.report import MetricRow, write_report
from pipelines.generator.data import DataConfig
from pipelines.generator.gcdp_eval import held_out_prompts

NAME = "generator_aligned"
SPLIT = "held-out prompts"
SINGLE = "single try"
SEEDS_ONLY = "retry: new seeds only"
SEED_STRIDE = 1000  # prompt p's tries draw seeds p * SEED_STRIDE + k
# The control retries with the same guidance; the policy reads 0 as "the default step", so the
# control asks for a step too small to change any guidance scale it is added to.
NO_GUIDANCE_STEP = 1e-6
NEVER = 1.0  # min_score no try reaches: every run makes all its tries (see Run)

app = typer.Typer(add_completion=False, help=__doc__)
T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One prompt's aligned run, made with a pass threshold no try reaches, so every try runs.

    A try's seed, guidance and prompt depend only on its index and the words flagged before it,
    never on the pass threshold, so the trail answers for any threshold t exactly what a run
    with min_score t would have returned: it would stop at the first try passing at t.
    """

    prompt: str
    result: AlignedGeneration

    def outcome(self, threshold: float, tries: int) -> tuple[bool, float]:
        """(passed, audit score of the returned image) of a run with `tries` tries and pass
        threshold `threshold`: the first passing try, else the highest-scoring one."""
        scores = []
        for attempt in self.result.tries[:tries]:
            score = attempt.score.aligned_probability
            if not attempt.flagged and score > threshold:
                return True, score
            scores.append(score)
        return False, max(scores)


def eval_settings(generator: str, scorer: str) -> Settings:
    """The user's settings (registry, device, limits) serving these models on free loopback
    ports, with the in-process bus (the aligned RPC needs no Kafka)."""
    generator_port, scorer_port = _free_ports(2)
    return load_settings(
        generator={"model": generator},
        scorer={"model": scorer},
        serving={
            "ports": {"generator": generator_port, "scorer": scorer_port},
            "host": "127.0.0.1",
            "addresses": {},
            "metrics_port": 0,
        },
        bus="memory",
    )


def servable_generator(uri: str, work: Path, say: Callable[[str], None] = typer.echo) -> str:
    """A generator URI the service loads: `models:/...` and model directories as they are; a
    training checkpoint (`train_state.pt`, or a training output directory holding
    `checkpoint/train_state.pt` but no model yet) exported to `work` (its EMA weights), so a
    run can be measured before its training ends."""
    if uri.startswith("models:/"):
        return uri
    path = Path(uri).resolve()
    if is_generator_dir(path):
        return str(path)
    checkpoint = path if path.is_file() else path / "checkpoint" / "train_state.pt"
    if not checkpoint.is_file():
        raise typer.BadParameter(
            f"{uri} is neither a generator directory nor a training checkpoint",
            param_hint="--generator",
        )
    from concord.checkpoints import save_generator
    from pipelines.generator.report import model_from_checkpoint

    pipe, info = model_from_checkpoint(checkpoint)
    save_generator(pipe, work / "generator")
    say(f"generator: checkpoint {checkpoint} at step {info['steps']} (EMA weights)")
    return str(work / "generator")


def serve(settings: Settings, body: Callable[[], T]) -> T:
    """Run the generator and the scorer in this process while `body` runs (in a thread)."""
    from concord.serving.runner import Deployment

    async def main() -> T:
        deployment = Deployment(["generator", "scorer"], settings)
        await deployment.start()
        try:
            return await asyncio.to_thread(body)
        finally:
            await deployment.stop()

    return asyncio.run(main())


def run_prompts(
    settings: Settings,
    prompts: Sequence[str],
    *,
    max_tries: int,
    steps: int,
    guidance: float,
    min_score: float,
    emphasis: bool,
    guidance_step: float,
    say: Callable[[str], None] = typer.echo,
) -> list[Run]:
    """Every prompt through GenerateAligned; prompt p's tries start at seed p * SEED_STRIDE."""
    runs = []
    with Concord(settings) as sdk:
        for p, prompt in enumerate(prompts):
            result = sdk.generator.generate_aligned(
                prompt,
                max_tries=max_tries,
                min_score=min_score,
                guidance_step=guidance_step,
                emphasis=emphasis,
                seed=p * SEED_STRIDE,
                steps=steps,
                guidance_scale=guidance,
            )
            runs.append(Run(prompt, result))
            scores = " ".join(f"{t.score.aligned_probability:.2f}" for t in result.tries)
            say(
                f"  [{p + 1}/{len(prompts)}] {'pass' if result.passed else 'fail'} {scores}  {prompt}"
            )
    return runs


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def rows_for(
    runs: Sequence[Run], control: Sequence[Run] | None, max_tries: int, thresholds: Sequence[float]
) -> list[MetricRow]:
    aligned = f"aligned ({max_tries} tries)"
    seeds_only = f"{SEEDS_ONLY} ({max_tries} tries)"
    rows = [
        MetricRow(
            "tries with flagged words",
            SPLIT,
            SINGLE,
            _mean([bool(r.result.tries[0].flagged) for r in runs]),
        ),
        MetricRow(
            "tries with flagged words",
            SPLIT,
            aligned,
            _mean([bool(t.flagged) for r in runs for t in r.result.tries]),
            SINGLE,
        ),
    ]
    for t in thresholds:
        split = f"{SPLIT}, pass: P(aligned) > {t:g}"
        single = [r.outcome(t, 1) for r in runs]
        full = [r.outcome(t, max_tries) for r in runs]
        rows += [
            MetricRow("audit pass rate", split, SINGLE, _mean([p for p, _ in single])),
            MetricRow("audit pass rate", split, aligned, _mean([p for p, _ in full]), SINGLE),
            MetricRow("mean audit score", split, SINGLE, _mean([v for _, v in single])),
            MetricRow("mean audit score", split, aligned, _mean([v for _, v in full]), SINGLE),
        ]
        for k in range(2, max_tries):
            rows.append(
                MetricRow(
                    "audit pass rate",
                    split,
                    f"aligned ({k} tries)",
                    _mean([r.outcome(t, k)[0] for r in runs]),
                    SINGLE,
                )
            )
        if control:
            ctrl = [r.outcome(t, max_tries) for r in control]
            rows += [
                MetricRow(
                    "audit pass rate", split, seeds_only, _mean([p for p, _ in ctrl]), SINGLE
                ),
                MetricRow(
                    "mean audit score", split, seeds_only, _mean([v for _, v in ctrl]), SINGLE
                ),
            ]
    return rows


def notes_for(
    runs: Sequence[Run],
    params: dict[str, object],
    models: dict[str, str],
    note: str,
) -> str:
    lines = []
    if note:
        lines += [f"> {note}", ""]
    lines += [
        f"- Generator: `{models['generator']}`; scorer: `{models['scorer']}`.",
        f"- {params['prompts']} held-out Concord Scenes prompts (`gcdp_eval.held_out_prompts`, "
        f"data seed {params['data_seed']}), one `GenerateAligned` call each over gRPC "
        f"(generator and scorer served in this process), up to {params['max_tries']} tries, "
        f"{params['steps']} denoising steps, first-try guidance {params['guidance']} "
        f"(+{params['guidance_step']} per retry), flagged words repeated in retries' prompts.",
        "- A try passes when the scorer flags no word and its calibrated P(aligned) is above "
        "the threshold t (the service's default is 0.5, the calibration's decision boundary); "
        "the audit score is P(aligned) of the image against the prompt. Every run makes all "
        "its tries (called with min_score 1, which no try reaches): a try's seed, guidance "
        "and prompt do not depend on t, so each split reads off the trail exactly what a run "
        "with min_score t returns (it stops at the first try passing at t; its image is that "
        "try's, else the highest-scoring try's). 'single try' is try 0 of the same runs: the "
        "same seed, guidance and prompt as a plain generation.",
        f"- Control '{SEEDS_ONLY}': the same prompts and seeds, retried without emphasis and "
        "without more guidance (plain best-of-N)."
        if params.get("control")
        else "- No control run (--no-control).",
        f"- Time: {params['seconds']} s on this machine.",
        "",
        "## Examples",
        "",
        "| prompt | P(aligned) per try | flagged words per try | retry prompts |",
        "|---|---|---|---|",
    ]
    for run in runs[:10]:
        tries = run.result.tries
        scores = ", ".join(f"{t.score.aligned_probability:.2f}" for t in tries)
        flagged = "; ".join(",".join(w.word for w in t.flagged) or "-" for t in tries)
        changed = "; ".join(t.prompt for t in tries if t.prompt != run.prompt) or "-"
        lines.append(f"| {run.prompt} | {scores} | {flagged} | {changed} |")
    return "\n".join(lines)


@app.command()
def main(
    generator: Annotated[
        str, typer.Option(help="generator model: models:/NAME@ALIAS or a directory")
    ] = "models:/concord-generator@production",
    scorer: Annotated[
        str, typer.Option(help="scorer package: models:/NAME@ALIAS or a directory")
    ] = "models:/concord-scorer@production",
    prompts: Annotated[int, typer.Option(help="held-out prompts")] = 40,
    max_tries: Annotated[int, typer.Option(help="tries per prompt (1..8)")] = 4,
    steps: Annotated[int, typer.Option(help="denoising steps (0: the server's default)")] = 20,
    guidance: Annotated[float, typer.Option(help="first try's guidance (0: default)")] = 3.0,
    guidance_step: Annotated[float, typer.Option(help="guidance added per retry")] = 1.0,
    thresholds: Annotated[
        str, typer.Option(help="pass thresholds on P(aligned) to report, comma-separated")
    ] = "0.5,0.4,0.3",
    control: Annotated[bool, typer.Option(help="also run the new-seeds-only control")] = True,
    data_seed: Annotated[int, typer.Option(help="Concord Scenes seed of the prompts")] = 0,
    out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path("reports"),
    note: Annotated[str, typer.Option(help="a paragraph put first in the summary")] = "",
) -> None:
    """Measure GenerateAligned: audit pass rate and score with 1 try vs up to N tries."""
    t0 = time.perf_counter()
    try:
        levels = [float(t) for t in thresholds.split(",") if t.strip()]
    except ValueError:
        raise typer.BadParameter("numbers separated by commas", param_hint="--thresholds") from None
    if not levels or not all(0.0 <= t < 1.0 for t in levels):
        raise typer.BadParameter("each must be in [0, 1)", param_hint="--thresholds")
    for name, uri in (("generator", generator), ("scorer", scorer)):
        if not uri.startswith("models:/") and not Path(uri).exists():
            raise typer.BadParameter(f"{uri} does not exist", param_hint=f"--{name}")
    data = DataConfig(seed=data_seed)
    texts = held_out_prompts(data, prompts).prompts
    work = Path(tempfile.mkdtemp(prefix="aligned-eval-"))
    settings = eval_settings(
        servable_generator(generator, work),
        str(Path(scorer).resolve()) if not scorer.startswith("models:/") else scorer,
    )

    def body() -> tuple[list[Run], list[Run] | None, dict[str, str]]:
        with Concord(settings) as sdk:
            served = {
                "generator": str(sdk.generator.model()),
                "scorer": ", ".join(str(m) for m in sdk.scorer.models()),
            }
        typer.echo(f"aligned generation ({max_tries} tries): {served}")
        common = {"max_tries": max_tries, "steps": steps, "guidance": guidance}
        runs = run_prompts(
            settings,
            texts,
            min_score=NEVER,
            emphasis=True,
            guidance_step=guidance_step,
            **common,  # type: ignore[arg-type]
        )
        seeds_only = None
        if control:
            typer.echo("control: new seeds only")
            seeds_only = run_prompts(
                settings,
                texts,
                min_score=NEVER,
                emphasis=False,
                guidance_step=NO_GUIDANCE_STEP,
                **common,  # type: ignore[arg-type]
            )
        return runs, seeds_only, served

    try:
        runs, seeds_only, served = serve(settings, body)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    params: dict[str, object] = {
        "prompts": len(texts),
        "data_seed": data.seed,
        "max_tries": max_tries,
        "steps": steps,
        "guidance": guidance,
        "guidance_step": guidance_step,
        "thresholds": levels,
        "control": control,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    rows = rows_for(runs, seeds_only, max_tries, levels)
    files = write_report(
        NAME,
        rows,
        out_dir,
        data_seed=data.seed,
        title="Generator: generate until aligned (1 try vs N tries)",
        notes=notes_for(runs, params, served, note),
    )
    for row in rows:
        typer.echo(f"{row.metric:<24} {row.split:<40} {row.method:<32} {row.value:.3f}")
    typer.echo(f"wrote {files.markdown} and {files.json} in {params['seconds']} s")


if __name__ == "__main__":
    app()
