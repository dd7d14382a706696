"""Two processes under torchrun (gloo on the CPU) train the prompts one process trains on the same global
batches, for CoOp and for MetaPrompt's cross-class and cross-domain splits; evaluation is shared between them and gathered;
only rank 0 writes and prints. The global batches themselves are checked without processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import make_image_folder, prompts, train_args
from metaprompt import distributed
from metaprompt.cli import main
from metaprompt.errors import MetapromptError
from data_layouts import make_world
from torchrun_cli import SEPARATOR

DRIVER = Path(__file__).with_name("torchrun_cli.py")
TRAIN_IMAGES, TEST_IMAGES = 15, 5
RUNS = {
    # one global batch of all 15 images (fewer than batch_size): shares of 7 and 8 images
    "coop": ("epochs=3", "warmup_epochs=0", "batch_size=16"),
    # 7 global batches of 2 (the last image is dropped): one image per process, so that on each process
    # either the meta-train or the meta-test rows of a class split are empty
    "metaprompt": ("epochs=1", "warmup_epochs=0", "batch_size=2"),
    # KgCoOp's distance to the hand-crafted features is the same on every process: each adds its share once
    "kgcoop": ("epochs=3", "warmup_epochs=0", "batch_size=16", "lr=0.01"),
    # PromptSRC's L1 and KL terms over the global batch, its text term once; two epochs aggregated (GPA)
    "promptsrc": ("epochs=2", "warmup_epochs=0", "batch_size=8", "text_depth=2", "vision_depth=2", "gpa_mean=1.5"),
}
STEPS = {"coop": 3, "metaprompt": 7, "kgcoop": 3, "promptsrc": 2}
# MetaPrompt's cross-domain split on the miniature world: 1 shot per class per source domain (12 images),
# global batches of 4 shared 2 / 2, so a process often holds no image of the meta-test domain
DG_SETS = ("epochs=1", "warmup_epochs=0", "batch_size=4", "meta_split=domain")
DG_EXTRA = ("--target-domain", "photo", "--shots", "1")
RUN_FILES = ["config.yaml", "log.txt", "metrics.json", "prompts.safetensors", "tensorboard"]  # no checkpoint: finished


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    classes = ["ant", "bee", "cat", "dog", "emu"]
    return make_image_folder(tmp_path_factory.mktemp("data"), classes, {"train": 3, "test": 1})


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("worlddata")
    make_world(root)
    return root


@pytest.fixture(scope="module")
def torchrun(folder, world_root, tiny_model_name, tiny_weights, tmp_path_factory) -> tuple[Path, str]:
    """Both trainings in one `torchrun --nproc_per_node 2` launch, with a data-loading worker per process;
    the folder holding their runs, and stdout."""
    runs = tmp_path_factory.mktemp("torchrun")
    commands: list[str] = []
    for method, sets in RUNS.items():
        args = train_args(method, folder, runs / method, (tiny_model_name, tiny_weights), *sets,
                          extra=("--shots", "0", "--workers", "1"))
        commands += [*args, SEPARATOR]
    commands += train_args("metaprompt", world_root, runs / "metaprompt_dg", (tiny_model_name, tiny_weights), *DG_SETS,
                           dataset="world_dg", extra=(*DG_EXTRA, "--workers", "1"))
    commands.append(SEPARATOR)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER)]
    with subprocess.Popen([*launch, *commands[:-1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
            raise
    assert proc.returncode == 0, stderr
    return runs, stdout


@pytest.mark.parametrize("method", RUNS)
def test_two_processes_train_what_one_process_trains(method, torchrun, folder, tiny_model_name, tiny_weights,
                                                     tmp_path):
    runs, stdout = torchrun
    one = tmp_path / method
    assert main(train_args(method, folder, one, (tiny_model_name, tiny_weights), *RUNS[method],
                           extra=("--shots", "0"))) == 0
    single, double = prompts(one), prompts(runs / method)
    assert single.keys() == double.keys()
    for name in single:
        assert torch.allclose(double[name], single[name], rtol=0, atol=1e-5), name
    metrics = json.loads((runs / method / "metrics.json").read_text())
    assert metrics["train_steps"] == STEPS[method] and metrics["environment"]["processes"] == 2
    assert metrics["num_test"] == TEST_IMAGES
    assert metrics["accuracy"] == json.loads((one / "metrics.json").read_text())["accuracy"]
    assert sorted(p.name for p in (runs / method).iterdir()) == RUN_FILES
    assert sum(line.startswith(f"{method} on imagefolder") for line in stdout.splitlines()) == 1


def test_two_processes_train_the_cross_domain_split_of_one_process(torchrun, world_root, tiny_model_name,
                                                                   tiny_weights, tmp_path):
    runs, _ = torchrun
    one = tmp_path / "dg"
    assert main(train_args("metaprompt", world_root, one, (tiny_model_name, tiny_weights), *DG_SETS,
                           dataset="world_dg", extra=DG_EXTRA)) == 0
    single, double = prompts(one), prompts(runs / "metaprompt_dg")
    for name in single:
        assert torch.allclose(double[name], single[name], rtol=0, atol=1e-5), name
    assert json.loads((runs / "metaprompt_dg" / "metrics.json").read_text())["train_steps"] == 3


def shares(size: int, batch_size: int, world: int, epoch: int, monkeypatch) -> list[list[list[int]]]:
    """Every process's batches of one epoch: [rank][batch] -> indices."""
    per_rank = []
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        sampler = distributed.GlobalBatchSampler(size, batch_size, seed=3)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    return per_rank


@pytest.mark.parametrize("size, batch_size, world", [(15, 4, 2), (15, 6, 3), (15, 16, 2), (5, 8, 4), (16, 4, 4)])
def test_processes_share_exactly_the_single_process_batches(size, batch_size, world, monkeypatch):
    """No sample is repeated or dropped per process (as DistributedSampler pads or drops), whatever the sizes."""
    for epoch in (0, 1):
        (single,) = shares(size, batch_size, 1, epoch, monkeypatch)
        split = shares(size, batch_size, world, epoch, monkeypatch)
        assert all(len(batches) == len(single) for batches in split)
        for b, batch in enumerate(single):
            parts = [batches[b] for batches in split]
            assert sum(parts, []) == batch and all(parts)
    assert len(single) == max(size // batch_size, 1)


def test_too_few_images_for_the_processes():
    from metaprompt.config import TrainConfig
    from metaprompt.engine import check_batch_split

    with pytest.raises(MetapromptError, match="the training set has 3 images, fewer than the 4 processes"):
        check_batch_split(TrainConfig(batch_size=16), images=3, processes=4)
    check_batch_split(TrainConfig(batch_size=4), images=4, processes=4)  # one image each is enough


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_error_on_one_process_stops_every_process(split, tmp_path, tiny_model_name, tiny_weights):
    """An unreadable image in one process's share (of a training batch, or of the test split it evaluates):
    that process says what it is, the other stops too instead of waiting in a collective call for ever."""
    folder = make_image_folder(tmp_path / "data", ["ant", "bee", "cat", "dog"], {"train": 2, "test": 2})
    bad = folder / split / "dog" / "1.png"  # the last test image: the second process's share of the test split
    bad.write_bytes(bad.read_bytes()[:60])
    args = train_args("coop", folder, tmp_path / "run", (tiny_model_name, tiny_weights), "epochs=1",
                      "batch_size=8", "warmup_epochs=0", extra=("--shots", "0"))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER)]
    with subprocess.Popen([*launch, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("a process was left waiting after another one failed")
    lines = [line for line in stderr.splitlines() if line.startswith("metaprompt:")
             and not line.startswith("metaprompt: warning:")]
    assert proc.returncode != 0
    assert sum(f"image file {bad} is truncated or not an image" in line for line in lines) == 1, stderr
    peer = [line for line in lines if "another process stopped with an error" in line]
    assert len(lines) == 1 + len(peer), stderr  # nothing else: no process was killed while it waited
    if split == "test":  # the second process failed: the first stopped by itself and said so
        assert len(peer) == 1 and peer[0].startswith("metaprompt: error:"), stderr
