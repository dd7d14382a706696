"""Bad input gets one line naming the thing and what was expected, a non-zero exit code, no traceback,
and leaves the run folder as it was (not created, or an earlier run untouched)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import TINY_CONFIG, make_image_folder, metaprompt_command, one_thread_env, train_args
from data_layouts import COOP_DATASETS, make_coop_dataset, make_pacs
from metaprompt.artifact import read_artifact, save_artifact
from metaprompt.cli import DEBUG_ENV, main
from metaprompt.clip import load_clip
from metaprompt.methods import build_method, make_config

CLASSES = ["ant", "bee", "cat", "dog"]



@pytest.fixture()
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data", CLASSES, {"train": 3, "test": 1})


def failure(capsys, argv: list[str], code: int = 2) -> str:
    """Run the command, which must fail with ``code`` and exactly one line of its own (besides warnings, such
    as the departure from a published config that these tiny runs make); that line."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines()
             if line.startswith("metaprompt:") and not line.startswith("metaprompt: warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:60])
    return path


# ------------------------------------------------------------------ data on disk

def test_missing_data_root(capsys, tmp_path, model):
    out = tmp_path / "run"
    line = failure(capsys, train_args("coop", tmp_path / "nowhere", out, model))
    assert "nowhere" in line and "does not exist" in line and "expected" in line
    assert not out.exists()


@pytest.mark.parametrize("dataset", ["imagefolder", "eurosat"])
def test_empty_data_root(capsys, tmp_path, model, dataset):
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    line = failure(capsys, train_args("coop", root, out, model, dataset=dataset))
    assert str(root) in line and "expected" in line
    assert not out.exists()


def test_image_named_by_the_split_file_is_missing(capsys, tmp_path, model):
    folder = make_coop_dataset(tmp_path, "eurosat")
    spec = COOP_DATASETS["eurosat"]
    split = json.loads((folder / spec.split_file).read_text())
    missing = split["train"][0][0]
    (folder / spec.image_dir / missing).unlink()
    out = tmp_path / "run"
    line = failure(capsys, train_args("coop", tmp_path, out, model, dataset="eurosat"))
    assert spec.split_file in line and missing in line and "does not exist" in line
    assert not out.exists()


def test_split_file_with_a_malformed_line(capsys, tmp_path, model):
    split_file = make_pacs(tmp_path) / "splits" / "photo_train_kfold.txt"
    split_file.write_text(split_file.read_text() + "photo/dog/pic_009.jpg dog\n")
    out = tmp_path / "run"
    line = failure(capsys, train_args("coop", tmp_path, out, model, dataset="pacs",
                                      extra=("--target-domain", "sketch")))
    assert split_file.name in line and "'photo/dog/pic_009.jpg dog' is malformed" in line and "expected" in line
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_unreadable_image_stops_before_anything_is_written(capsys, tmp_path, folder, model, damage):
    bad = folder / "train" / "bee" / "0.png"
    if damage == "truncated":
        truncate(bad)
    else:
        bad.write_text("not an image")
    out = tmp_path / "run"
    line = failure(capsys, train_args("coop", folder, out, model, "epochs=1", "batch_size=4", extra=("--shots", "0")))
    assert str(bad) in line and "truncated or not an image" in line and "--skip-bad-images" in line
    assert not out.exists()


def test_unreadable_images_are_skipped_and_counted_when_asked(capsys, tmp_path, folder, model):
    truncate(folder / "train" / "bee" / "0.png")
    truncate(folder / "test" / "cat" / "0.png")
    out = tmp_path / "run"
    args = train_args("coop", folder, out, model, "epochs=1", "batch_size=4",
                      extra=("--shots", "0", "--skip-bad-images"))
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2 and metrics["num_test"] == 3
    assert "2 unreadable images skipped" in capsys.readouterr().out


def test_unreadable_image_in_a_worker_process_is_one_line_from_the_real_command(tmp_path, folder, model):
    """In a DataLoader worker torch wraps the error in the worker's traceback; the user still sees one line."""
    bad = truncate(folder / "train" / "ant" / "1.png")
    out = tmp_path / "run"
    args = train_args("coop", folder, out, model, "epochs=1", "batch_size=4", extra=("--shots", "0", "--workers", "1"))
    done = subprocess.run(metaprompt_command(args), capture_output=True, text=True, timeout=120,
                          env=one_thread_env())
    errors = [line for line in done.stderr.splitlines()
              if line.startswith("metaprompt:") and not line.startswith("metaprompt: warning:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and f"image file {bad} is truncated or not an image" in errors[0]
    assert not out.exists()


def test_more_shots_than_the_classes_have_takes_them_all_and_says_so(capsys, tmp_path, folder, model):
    """As the reference readers do: a class with fewer images than the shots gives all it has; the run goes
    on, says so in one line and records it."""
    out = tmp_path / "run"
    assert main(train_args("coop", folder, out, model, "epochs=1", "batch_size=4", extra=("--shots", "5"))) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt: note:")]
    assert len(notes) == 1 and "4 class(es) had fewer than 5 training images" in notes[0] and "8 images short" in notes[0]
    record = json.loads((out / "fewshot.json").read_text())
    assert len(record["train"]) == 12 and len(record["shortfall"]) == 4
    assert record["shortfall"][0] == {"class": "ant", "domain": "", "images": 3, "shots": 5}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shortfall"] == {"classes": 4, "missing_images": 8} and metrics["num_train"] == 12


# ------------------------------------------------------------------ names and options

@pytest.mark.parametrize("flag, value, expected", [
    ("--method", "cooop", "unknown method 'cooop'; expected one of: zeroshot, linear_probe, coop"),
    ("--dataset", "imagenette", "unknown dataset 'imagenette'; expected one of:"),
    ("--model", "ViT-Q-99", "unknown model 'ViT-Q-99'"),
    ("--preset", "coop_b2m", "unknown preset 'coop_b2m'; expected one of:"),
    ("--set", "n_ctxx=4", "--set n_ctxx: no such option. Training options: epochs"),
    ("--set", "epochs=two", "--set epochs=two: train.epochs must be an integer, got 'two'"),
    ("--set", "lr=fast", "--set lr=fast: train.lr must be a number, got 'fast'"),
    ("--set", "epochs=-1", "--set epochs=-1: train.epochs must be a number >= 0, got -1"),
    ("--set", "lr=-1", "--set lr=-1: train.lr must be a number > 0, got -1.0"),
    ("--set", "batch_size=0", "--set batch_size=0: train.batch_size must be a number >= 1, got 0"),
    ("--set", "precision=fp8", "--set precision=fp8: train.precision must be one of 'auto', 'fp32', 'bf16', "
                               "'fp16', 'fp16-pure', got 'fp8'"),
    ("--set", "class_token_position=start", "method.class_token_position must be one of 'end', 'middle', 'front'"),
    ("--set", "n_ctx=0", "--set n_ctx=0: method.n_ctx must be a number >= 1, got 0"),
    ("--shots", "-2", "--shots -2: train.shots must be a number >= 0, got -2"),
    ("--workers", "-1", "--workers -1: train.num_workers must be a number >= 0, got -1"),
    ("--device", "cuda:banana", "--device cuda:banana: not a torch device; expected cpu, cuda, cuda:N or mps"),
])
def test_unknown_names_and_bad_options(capsys, tmp_path, folder, model, flag, value, expected):
    """The flag is given last, so that it wins over the one ``train_args`` gives."""
    out = tmp_path / "run"
    args = train_args("coop", folder, out, model, extra=("--shots", "2"))
    assert expected in failure(capsys, [*args, flag, value])
    assert not out.exists()


def test_cuda_asked_for_on_a_machine_without_one(capsys, tmp_path, folder, model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = failure(capsys, [*train_args("coop", folder, out, model), "--device", "cuda"])
    assert "--device cuda: this machine has no CUDA device" in line and "use --device cpu" in line
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [
    ("method: coop\ntrain: {lr: 0.002\n", "not valid YAML"),
    ("- method: coop\n", "expected a mapping with at least a 'method' key"),
    ("method: coop\nmethod_config: 5\n", "method_config must be a mapping, got 5"),
    ("method: coop\ntrain: {lr: -1}\n", "train.lr must be a number > 0, got -1.0"),
    ("method: coop\ntrain: {epochs: 2.5}\n", "train.epochs must be an integer, got 2.5"),
    ("method: coop\nmethod_config: {n_ctx: 4, ctx_init: a photo, class_specific: true}\n",
     "class_specific contexts start from random vectors"),
    ("method: coop\nmodel: 16\n", "model must be a string, got 16"),
    ("method: coop\nepochs: 5\n", "unknown key 'epochs'; a preset takes method, model"),
    ("method: coop\nvariants:\n  - {follows: x, train: {epoch: 5}}\n", "no training option epoch"),
    ("method: coop\nvariants:\n  - {follows: x, train: {epochs: -5}}\n", "train.epochs must be a number >= 0, got -5"),
])
def test_a_preset_file_that_is_wrong_is_named_with_what_is_wrong(capsys, tmp_path, folder, model, text, expected):
    preset = tmp_path / "mine.yaml"
    preset.write_text(text)
    out = tmp_path / "run"
    line = failure(capsys, [*train_args("coop", folder, out, model), "--preset", str(preset)])
    assert str(preset) in line and expected in line
    assert not out.exists()


# ------------------------------------------------------------------ prompt artifacts

@pytest.fixture()
def artifact(tmp_path, tiny_model_name, tiny_weights) -> Path:
    method = build_method("coop", load_clip(tiny_model_name, tiny_weights), ["ant", "bee"], make_config("coop"))
    return save_artifact(tmp_path / "prompts.safetensors", method)


def eval_args(prompts: Path, folder: Path, dump: Path, model: str = "ViT-B-16") -> list[str]:
    return ["eval", "--model", model, "--pretrained", "none", "--prompts", str(prompts), "--dataset", "imagefolder", "--root", str(folder), "--workers", "0",
            "--no-progress", "--dump-logits", str(dump)]


def test_artifact_from_another_model(capsys, tmp_path, folder, artifact):
    wide = tmp_path / "tiny-wide.json"
    wide.write_text(json.dumps({**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "width": 64}}))
    art = read_artifact(artifact)
    meta = {"format": "metaprompt-prompts/1", "method": art.method, "config": json.dumps(art.config),
            "model": str(wide), "pretrained": "null", "classnames": json.dumps(art.classnames), "dataset": art.dataset}
    moved = tmp_path / "moved.safetensors"
    save_file(art.tensors, str(moved), metadata=meta)
    line = failure(capsys, eval_args(moved, folder, tmp_path / "logits.npz", model=str(wide)))
    assert str(moved) in line and "'text_prompts' has shape [1, 4, 48]" in line and "expects [1, 4, 64]" in line
    assert not (tmp_path / "logits.npz").exists()


@pytest.mark.parametrize("damage", ["truncated", "not safetensors"])
def test_corrupted_artifact(capsys, tmp_path, folder, artifact, damage):
    if damage == "truncated":
        truncate(artifact)
    else:
        artifact.write_text("{}")
    line = failure(capsys, eval_args(artifact, folder, tmp_path / "logits.npz"))
    assert f"prompt artifact {artifact} is corrupted or not a metaprompt artifact" in line
    assert not (tmp_path / "logits.npz").exists()


# ------------------------------------------------------------------ runs

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(capsys, tmp_path, folder, model):
    """The warm-up epoch (lr 1e-5) is fine and checkpointed; the huge lr of epoch 2 makes the loss NaN."""
    out = tmp_path / "run"
    line = failure(capsys, train_args("coop", folder, out, model, "epochs=2", "batch_size=4", "lr=1e30",
                                      extra=("--shots", "0")))
    assert "loss became nan at step" in line and "(epoch 2)" in line
    assert f"the last good checkpoint {out / 'checkpoint.pt'} is kept" in line
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 1 and torch.isfinite(checkpoint["tensors"]["text_prompts"]).all()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "log.txt", "tensorboard"]
    assert "stopped: loss became nan" in (out / "log.txt").read_text()


def test_a_finished_run_is_not_overwritten(capsys, tmp_path, folder, model):
    out = tmp_path / "run"
    args = train_args("coop", folder, out, model, "epochs=1", "max_steps=1", "batch_size=4", extra=("--shots", "0"))
    assert main(args) == 0
    finished = snapshot(out)
    capsys.readouterr()
    assert main(args) == 0  # the same command again: finished, nothing to do
    assert f"{out} holds this run, finished" in capsys.readouterr().out
    assert snapshot(out) == finished
    assert "holds a finished run of another configuration" in failure(capsys, [*args, "--set", "lr=0.5"])
    truncate(folder / "train" / "cat" / "2.png")
    assert "truncated or not an image" in failure(capsys, [*args, "--overwrite"])
    assert snapshot(out) == finished


def test_an_unexpected_error_is_one_line_with_a_hint(capsys, monkeypatch, tmp_path, folder, model):
    def broken(*args, **kwargs):
        raise RuntimeError("shapes do not match\nmore detail")

    monkeypatch.setattr("metaprompt.experiment.train_run", broken)
    args = train_args("coop", folder, tmp_path / "run", model)
    line = failure(capsys, args, code=1)
    assert "unexpected error (RuntimeError: shapes do not match)" in line and f"{DEBUG_ENV}=1" in line
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="shapes do not match"):
        main(args)
