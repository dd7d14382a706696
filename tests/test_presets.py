"""What a run records of its configuration: the published config it follows, the variant the reference
scripts pick for its dataset and shots, its departures from published values (and the one warning line),
its per-epoch history and its TensorBoard curves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import make_image_folder, train_args
from metaprompt.cli import main
from metaprompt.config import protocol_preset, resolve
from metaprompt.engine import lr_at_epoch

COOP = "KaiyangZhou/CoOp configs/trainers/CoOp/"


@pytest.mark.parametrize("preset, dataset, shots, epochs, follows", [
    ("coop_b2n", "caltech101", 16, 200, "vit_b16_ctxv1.yaml"),
    ("coop_b2n", "imagenet", 16, 50, "vit_b16_ep50_ctxv1.yaml"),
    ("coop_fewshot", "eurosat", 1, 50, "vit_b16_ep50.yaml"),
    ("coop_fewshot", "eurosat", 2, 100, "vit_b16_ep100.yaml"),
    ("coop_fewshot", "eurosat", 4, 100, "vit_b16_ep100.yaml"),
    ("coop_fewshot", "eurosat", 8, 200, "vit_b16.yaml"),
    ("coop_fewshot", "imagenet", 16, 50, "vit_b16_ep50.yaml"),
])
def test_coop_epochs_follow_the_released_config_for_the_dataset_and_shots(preset, dataset, shots, epochs, follows):
    cfg = resolve(preset=preset, sets=[f"shots={shots}"]).for_task(dataset)
    assert cfg.train.epochs == epochs and cfg.follows == COOP + follows and cfg.departures == {}


def test_a_value_the_user_sets_is_kept_and_recorded_as_a_departure():
    cfg = resolve(preset="coop_b2n", sets=["epochs=7", "lr=0.01", "num_workers=0"]).for_task("imagenet")
    assert cfg.train.epochs == 7
    assert cfg.departures == {"train.epochs": {"published": 50, "used": 7},
                              "train.lr": {"published": 0.002, "used": 0.01}}
    line = cfg.departure_line()
    assert "\n" not in line and "vit_b16_ep50_ctxv1.yaml" in line and "epochs=7 (published 50)" in line


def test_maple_cross_dataset_runs_start_from_the_released_cross_dataset_config():
    cfg = resolve("maple", protocol_preset("xd", "maple")).for_task("imagenet")
    assert (cfg.train.lr, cfg.train.epochs, cfg.method_config.depth) == (0.0026, 2, 3)
    assert cfg.follows.endswith("MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml")
    assert protocol_preset("xd", "coop") is None


def test_the_world_presets_follow_no_released_file():
    cfg = resolve(preset="world_coop_b2n", sets=["lr=0.5"]).for_task("world")
    assert cfg.follows is None and cfg.departure_line() == ""


@pytest.fixture()
def run(tmp_path, tiny_model_name, tiny_weights, capsys) -> tuple[Path, str]:
    """A 3-epoch CoOp run on the tiny model; its folder and what it printed on stderr."""
    data = make_image_folder(tmp_path / "data", ["ant", "bee", "cat"], {"train": 4, "test": 2})
    out = tmp_path / "run"
    args = train_args("coop", data, out, (tiny_model_name, tiny_weights), "epochs=3", "batch_size=4", "lr=0.05",
                      extra=("--shots", "4"))
    assert main(args) == 0
    return out, capsys.readouterr().err


def test_a_run_records_what_it_follows_and_how_it_departs(run):
    out, err = run
    stored = yaml.safe_load((out / "config.yaml").read_text())["run"]
    assert stored["follows"] == COOP + "vit_b16_ep100_ctxv1.yaml"  # 4 shots
    assert stored["departures"]["train.epochs"] == {"published": 100, "used": 3}
    warnings = [line for line in err.splitlines() if "departs from the published config" in line]
    assert len(warnings) == 1 and "epochs=3 (published 100)" in warnings[0]


def test_a_run_keeps_its_per_epoch_history_and_tensorboard_curves(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = resolve(preset="coop_b2n", sets=["epochs=3", "lr=0.05"]).train
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    expected_lrs = [lr_at_epoch(cfg, e) for e in range(3)]  # Dassl's, as tests/test_parity.py checks
    assert [h["lr"] for h in history] == expected_lrs
    assert all(isinstance(h["loss"], float) and 0 <= h["acc"] <= 100 for h in history)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/acc", "train/lr", "test/accuracy"} <= set(events.Tags()["scalars"])
    per_epoch = metrics["train_steps"] // 3  # 12 images in batches of 4
    lrs = [(e.step, e.value) for e in events.Scalars("train/lr")]
    assert lrs == [(epoch * per_epoch + b, pytest.approx(lr)) for epoch, lr in enumerate(expected_lrs)
                   for b in range(per_epoch)]  # Dassl's step: epoch * batches per epoch + batch
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(metrics["accuracy"])
