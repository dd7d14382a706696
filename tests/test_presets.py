"""What a run records of its configuration: the published config it follows, the variant the reference
scripts pick for its dataset and shots, its departures from published values (and the one warning line),
its per-epoch history and its TensorBoard curves."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from helpers import make_image_folder, train_args
from metaprompt.cli import main
from metaprompt.config import RunConfig, apply_set, option_key, preset_names, protocol_preset, resolve
from metaprompt.engine import lr_at_epoch
from metaprompt.errors import MetapromptError

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


@pytest.mark.parametrize("protocol, method, follows, values", [
    ("xd", "promptsrc", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml",
     {"method.text_depth": 3, "method.gpa_mean": 6.0, "method.gpa_std": 10.0}),
    ("xd", "kgcoop", "KgCoOp/vit_b16_ep100_ctxv1.yaml", {"train.shots": 4, "method.w": 8.0}),
    ("fewshot", "promptsrc", "PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml",
     {"train.epochs": 50, "method.gpa_mean": 30.0}),
    ("fewshot", "coop", "CoOp/vit_b16.yaml", {"method.n_ctx": 16, "method.ctx_init": ""}),
])
def test_a_protocol_starts_each_method_from_the_preset_its_release_uses(protocol, method, follows, values):
    cfg = resolve(method, protocol_preset(protocol, method)).for_task("caltech101")
    assert cfg.follows.endswith(follows)
    assert {key: cfg.value(key) for key in values} == values


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


# ------------------------------------------------------------------ the shipped presets against docs/parity.md

PARITY_DOC = Path(__file__).resolve().parents[1] / "docs" / "parity.md"
VALUE_COLUMNS = {"shots": "shots", "epochs": "epochs", "batch": "batch_size", "LR": "lr", "precision": "precision",
                 "min crop": "crop_scale_min"}


def documented_presets() -> dict[str, dict[str, str]]:
    """The rows of docs/parity.md's table of every shipped preset, by preset: column -> cell."""
    lines = PARITY_DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| preset | method | model | shots |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[cells["preset"].strip("`")] = cells
    return rows


def test_the_documented_table_lists_every_shipped_preset():
    assert set(documented_presets()) == set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_each_shipped_preset_resolves_to_its_documented_values(name):
    import shlex

    from metaprompt.methods import method_class

    row, cfg = documented_presets()[name], resolve(preset=name)
    assert (row["method"], row["model"]) == (cfg.method, cfg.model)
    trained = cfg.method != "zeroshot" and not method_class(cfg.method).closed_form  # else: no optimiser
    for column, option in VALUE_COLUMNS.items():
        if trained or column == "shots":
            assert str(row[column]) == _cell(getattr(cfg.train, option)), f"{name}: {column}"
    if trained:
        epochs, lr = row["warm-up: epochs @ LR"].split(" @ ")
        assert (int(epochs), float(lr)) == (cfg.train.warmup_epochs, cfg.train.warmup_lr)
    options = dict(item.split("=", 1) for item in shlex.split(row["method options (as `--set` takes them)"]))
    assert options and set(options) <= {f.name for f in dataclasses.fields(cfg.method_config)}
    for key, text in options.items():
        assert apply_set(cfg, f"method.{key}={text}").method_config == cfg.method_config, f"{name}: {key}={text}"


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ --set parsing

@pytest.mark.parametrize("assignment, key, value", [
    ("lr=1e-5", "train.lr", 1e-5),           # YAML 1.1 reads 1e-5 as a string
    ("lr=2", "train.lr", 2.0),               # an int where a float goes
    ("train.lr=0.5", "train.lr", 0.5),
    ("pretrained=none", "pretrained", None),
    ("pretrained=None", "pretrained", None),
    ("ctx_init=", "method.ctx_init", ""),
    ("ctx_init=a photo of a", "method.ctx_init", "a photo of a"),
    ('ctx_init="a photo"', "method.ctx_init", "a photo"),
    ("ctx_init=1", "method.ctx_init", "1"),    # a string option keeps the text as typed
    ("class_specific=true", "method.class_specific", True),
    ("method.n_ctx=8", "method.n_ctx", 8),
    ("model=ViT-L-14", "model", "ViT-L-14"),
])
def test_set_parses_values_as_their_option_wants_them(assignment, key, value):
    cfg = apply_set(resolve(preset="coop_fewshot"), assignment)
    assert cfg.value(key) == value and type(cfg.value(key)) is type(value)
    assert key in cfg.user_keys


def test_set_is_kept_over_a_variant_and_scoped_keys_disambiguate():
    cfg = resolve(preset="coop_b2n", sets=["train.epochs=7"]).for_task("imagenet")
    assert cfg.train.epochs == 7  # the ImageNet variant (50 epochs) does not replace what the user set


def test_a_name_two_scopes_have_must_be_scoped():
    from metaprompt.methods.coop import CoOpConfig

    @dataclasses.dataclass
    class Clashing(CoOpConfig):
        epochs: int = 3  # a method option with a training option's name

    cfg = RunConfig("coop", method_config=Clashing())
    with pytest.raises(MetapromptError, match="--set epochs: ambiguous, say train.epochs or method.epochs"):
        option_key(cfg, "epochs")
    assert option_key(cfg, "method.epochs") == "method.epochs" and option_key(cfg, "train.epochs") == "train.epochs"


@pytest.mark.parametrize("assignment, message", [
    ("lr", "--set 'lr': expected key=value"),
    ("optim.lr=1", "--set optim.lr: unknown scope 'optim'; expected train. or method."),
    ("method.lr=1", "--set method.lr: no such option"),
    ("lr=none", "--set lr=none: train.lr must be a number, got 'none'"),
])
def test_set_refuses_what_it_cannot_apply(assignment, message):
    with pytest.raises(MetapromptError) as err:
        apply_set(resolve(preset="coop_b2n"), assignment)
    assert str(err.value).startswith(message)
