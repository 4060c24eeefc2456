"""Data-parallel encoder training (pipelines.encoder.distributed): with gathered embeddings and
DDP, two gloo ranks get exactly the single-process gradient of the global batch (clip and FILIP
losses, the rank-local foil term weighted by each shard's share, uneven shards, different caption
lengths per rank); `torchrun --nproc-per-node 2` training the recipe (hard negatives, rendered
twins, phrase grounding) follows the single-process loss curve step by step, and only rank 0
logs, saves and registers; the Kubernetes Job for several GPUs runs torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.dual_encoder import Encoded
from concord.models.losses import contrastive_loss, filip_loss, foil_loss
from pipelines.encoder import distributed
from pipelines.encoder.distributed import Context, shard, steps_per_epoch

# Spawned ranks import this module: the pipeline (torch + MLflow) is imported inside the tests.

ROOT = Path(__file__).resolve().parents[2]
# The shared recipe (two foils per caption, a rendered twin per scene) on the tiny preset without
# the binding pairs and with MiniLM frozen: a trained MiniLM layer runs its dropout (p 0.1), whose
# masks two ranks cannot draw as one process does (measured: step-1 losses 2.42 vs 2.51). The 13
# training images (8 scenes, 5 rendered twins) go in global batches of 5: shards of 3 + 2 rows
# (uneven, padded for the gather) and a last batch of 3 that both runs train on (one smaller than
# the world would be dropped by the ranks). `both` gathers pooled embeddings and the FILIP tokens
# of captions of different lengths on each rank.
RECIPE = {
    "preset": "tiny", "binding_size": "", "unfrozen_layers": 0, "epochs": 2, "batch_size": 5,
    "grounding": 1.0,
}  # fmt: skip
ARGS = (
    "--recipe", "concord", "--preset", "tiny", "--binding-size", "", "--unfrozen-layers", "0",
    "--epochs", "2", "--batch-size", "5", "--seed", "0", "--grounding", "1",
)  # fmt: skip
# Both runs compute the same float32 loss on the same global batch; they differ only in how the
# towers' matmuls are blocked (shards of 2-3 rows vs batches of 5) and in the order gradients are
# summed (DDP's all-reduce): ~1e-7 relative per step, compounded by the AdamW steps. A rank that
# skipped the gather would be off by ~0.4 on the first step already (near-uniform logits at init:
# ln 5 = 1.61 for the global batch of 5, ln 3 = 1.10 and ln 2 = 0.69 for the shards); one whose foil
# term (or grounding term, a mean over the shard's objects) were not weighted by its share would be
# off wherever the shards' foil (object) counts differ.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.encoder.data import ensure_dataset

    return ensure_dataset(
        "retrieval", tmp_path_factory.mktemp("data") / "retrieval", "tiny", seed=0
    )


class Toy(nn.Module):
    """A dual encoder in miniature: image and text token features -> Encoded, a logit scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(12, 8), nn.Linear(12, 8)
        self.log_scale = nn.Parameter(torch.tensor(2.0))

    @staticmethod
    def encode(proj: nn.Linear, x: Tensor, mask: Tensor) -> Encoded:
        tokens = F.normalize(proj(x), dim=-1) * mask.unsqueeze(-1)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True)
        return Encoded(F.normalize(pooled, dim=-1), tokens, mask)


def _toy_batch() -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """A global batch of 5: images of 4 tokens, captions of 2-6 tokens, two foils of 3 tokens per
    caption where the mask says so (3 captions with foils in rank 0's shard of 3, 1 in rank 1's 2:
    the foil term's shares are 1.5 and 0.5)."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(5, 4, 12, generator=gen)
    captions = [torch.randn(n, 12, generator=gen) for n in (2, 6, 3, 5, 2)]
    foils = torch.randn(5, 2, 3, 12, generator=gen)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]], dtype=torch.bool)
    return images, captions, foils, mask


def _toy_loss(
    model: Toy,
    kind: str,
    ctx: Context,
    images: Tensor,
    captions: list[Tensor],
    foils: Tensor,
    foil_mask: Tensor,
) -> Tensor:
    # Captions padded to this rank's longest, as the text cache and the tokenizer do.
    length = max(len(c) for c in captions)
    texts = torch.stack([F.pad(c, (0, 0, 0, length - len(c))) for c in captions])
    mask = torch.arange(length)[None, :] < torch.tensor([len(c) for c in captions])[:, None]
    image_local = Toy.encode(model.image, images, torch.ones(images.shape[:2], dtype=torch.bool))
    text_local = Toy.encode(model.text, texts, mask)
    tokens = kind == "filip"
    image = distributed.gather_encoded(image_local, ctx, tokens=tokens)
    text = distributed.gather_encoded(text_local, ctx, tokens=tokens)
    scale = model.log_scale.exp()
    if tokens:
        return filip_loss(image, text, scale)
    loss = contrastive_loss(image.pooled, text.pooled, scale)
    if kind == "foil":  # as the recipe's step adds its hard negatives
        flat = foils.flatten(0, 1)
        encoded = Toy.encode(model.text, flat, torch.ones(flat.shape[:2], dtype=torch.bool))
        term = foil_loss(image_local, text_local, encoded, foil_mask, scale)
        loss = loss + distributed.local_share(foil_mask.any(dim=1).sum(), ctx) * term
    return loss


KINDS = ("clip", "filip", "foil")


def _toy_gradients(kind: str, ctx: Context) -> tuple[float, dict[str, Tensor]]:
    model = Toy()
    images, captions, foils, mask = _toy_batch()
    rows = shard(np.arange(len(images)), ctx)
    step = distributed.wrap(
        distributed.Step(model, lambda m, *args: _toy_loss(m, kind, ctx, *args)), ctx
    )
    loss = step(images[rows], [captions[r] for r in rows], foils[rows], mask[rows])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return distributed.mean_over_ranks(loss, ctx), grads


def _gradient_rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ctx = Context(torch.device("cpu"), rank, world, rank, "gloo")
        results = {kind: _toy_gradients(kind, ctx) for kind in KINDS}
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~25 s of CPU (two spawned ranks import torch); far longer when busy
def test_gathered_loss_and_ddp_gradient_equal_the_single_process_ones(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = Context(torch.device("cpu"))
    want = {kind: _toy_gradients(kind, single) for kind in KINDS}
    out = str(tmp_path / "grads")
    mp.spawn(_gradient_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2)
    for rank in range(2):  # shards of 3 and 2 rows; captions padded to 6 and 5 tokens
        got = torch.load(f"{out}.{rank}")
        for kind, (loss, grads) in want.items():
            assert got[kind][0] == pytest.approx(loss, rel=1e-6, abs=1e-6)
            for name, grad in grads.items():
                torch.testing.assert_close(got[kind][1][name], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~80 s of CPU (three processes load MiniLM, MLflow); longer when busy
def test_two_gloo_ranks_follow_the_single_process_loss_and_register_once(
    scenes: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.train_encoder import EXPERIMENT, MODEL_NAME, RECIPES, TrainConfig, train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "CONCORD_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "pipelines.train_encoder", *ARGS,
        "--data", str(scenes), "--device", "cpu", "--threads", "1",
        "--tracking-uri", uri, "--register", "--alias", "production", "--out", str(tmp_path / "model"),
    ]  # fmt: skip
    # The two ranks run in the background while this process trains the single-process reference.
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        settings = {**RECIPES["concord"], **RECIPE, "seed": 0}
        reference = train(
            TrainConfig(
                data=scenes,
                threads=1,
                device="cpu",
                out=tmp_path / "reference",
                progress=False,
                **settings,  # type: ignore[arg-type]
            )
        )
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:  # torchrun and its workers share the session's process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-6000:]
    assert output.count("saved ") == 1 and "on 2 ranks" in output  # rank 0 reports

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])  # one run: rank 0's
    assert run.data.params["world_size"] == "2"
    steps = sorted(
        client.get_metric_history(run.info.run_id, "train_step_loss"), key=lambda m: m.step
    )
    single = np.array(reference.step_losses)
    assert len(single) == 6  # 13 images in batches of 5: 3 steps an epoch
    assert [m.step for m in steps] == list(range(1, len(single) + 1))
    ddp = np.array([m.value for m in steps])
    assert np.all(np.isfinite(ddp))
    diff = float(np.max(np.abs(ddp - single)))
    print(f"max |loss(2 ranks) - loss(1 process)| over {len(single)} steps: {diff:.3g}")
    assert diff <= TOLERANCE, (ddp.tolist(), single.tolist())

    (version,) = client.search_model_versions(f"name='{MODEL_NAME}'")  # registered once
    assert version.run_id == run.info.run_id
    assert client.get_model_version_by_alias(MODEL_NAME, "production").version == version.version
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_batches_split_into_rank_shards_that_rebuild_the_global_batch() -> None:
    batch = np.arange(10, 17)
    parts = [shard(batch, Context(torch.device("cpu"), rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert np.array_equal(np.concatenate(parts), batch)
    assert steps_per_epoch(8, 3, 1) == 3 and steps_per_epoch(8, 3, 2) == 3
    assert steps_per_epoch(7, 3, 2) == 2  # a last batch of 1 has no row for rank 1: dropped
    with pytest.raises(ValueError, match="global batch"):
        steps_per_epoch(100, 2, 4)


def test_kubernetes_job_for_two_gpus_runs_torchrun() -> None:
    import yaml
    from typer.testing import CliRunner

    from concord.cli import app

    args = ["--preset", "small", "--batch-size", "256", "--register"]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "encoder",
            "--on",
            "kubernetes",
            "--gpus",
            "2",
            "--dry-run",
            "client",
            "--",
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    (job,) = [m for m in yaml.safe_load_all(result.output) if m]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "pipelines.train_encoder",
        *args,
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]  # NCCL
