"""`metaprompt import` (issue 21, item 1): released trainers' Dassl checkpoints become artifacts whose eval logits
equal the released model's.

tests/goldens/dassl/<case>/ was written by ``python tools/parity/make_goldens.py --refs REFS``: after each trained
case of tools/parity/cases.py, the released trainer's own ``save_model`` wrote ``<learner>/model.pth.tar-1``
(the frozen CLIP weights left out, which the importer ignores; the pickled optimizer and LR scheduler objects
kept) and the trained model's eval logits were recorded (``released_logits.safetensors``). Here the checkpoint
goes through the CLI, and the artifact's logits must equal the released ones within 1e-5 of their scale.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from metaprompt.artifact import load_method, read_artifact
from metaprompt.cli import main
from test_parity import FIXTURE, GOLDENS, assert_equal, images

CHECKPOINTS = GOLDENS / "dassl"
CASES = sorted(p.name for p in CHECKPOINTS.iterdir()) if CHECKPOINTS.is_dir() else []


def released(name: str) -> tuple[dict, torch.Tensor]:
    with safe_open(str(CHECKPOINTS / name / "released_logits.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["case"]), f.get_tensor("logits")


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory) -> tuple[str, str]:
    """The fixture CLIP's model config and its OpenAI-format weights file."""
    pt = tmp_path_factory.mktemp("fixture") / "tiny_openai_clip.pt"
    with gzip.open(f"{FIXTURE}.pt.gz", "rb") as src, open(pt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return f"{FIXTURE}.json", str(pt)


def import_argv(path: Path | str, spec: dict, fixture: tuple[str, str], out: Path, *extra: str) -> list[str]:
    sets = [arg for key, value in spec["config"].items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    return ["import", str(path), "--method", spec["method"], "--model", fixture[0], "--pretrained", fixture[1],
            "--classnames", ",".join(spec["classes"]), "--dataset", spec["dataset"], *sets, "--out", str(out), *extra]


def imported_logits(artifact: Path, spec: dict, fixture: tuple[str, str]) -> torch.Tensor:
    """The eval logits of the imported artifact on the case's images (the fixture CLIP's weights named)."""
    method = load_method(artifact, model=fixture[0], pretrained=fixture[1])
    with method.evaluation():
        return method.model_inference(images(spec.get("eval", list(range(4)))))


def test_every_released_method_has_a_checkpoint_golden():
    methods = {released(name)[0]["method"] for name in CASES}
    assert methods == {"coop", "cocoop", "kgcoop", "vpt", "ivlp", "maple", "promptsrc", "metaprompt"}


@pytest.mark.parametrize("name", CASES)
def test_an_imported_checkpoint_gives_the_released_models_logits(name, fixture_files, tmp_path, capsys):
    spec, logits = released(name)
    out = tmp_path / "prompts.safetensors"
    assert main(import_argv(CHECKPOINTS / name, spec, fixture_files, out)) == 0, capsys.readouterr().err
    assert_equal(imported_logits(out, spec, fixture_files), logits, f"{name}: the imported artifact's eval logits")
    origin = json.loads(read_artifact(out).extra["imported_from"])
    assert origin["path"].endswith("model.pth.tar-1") and origin["epoch"] == 1 and len(origin["sha256"]) == 64


def copied(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / "output"
    shutil.copytree(CHECKPOINTS / name, folder)
    return folder


def learner_file(folder: Path) -> Path:
    return next(folder.glob("*/model.pth.tar-1"))


def test_the_output_folder_is_read_as_dassl_load_model_reads_it(fixture_files, tmp_path, capsys):
    spec, _ = released("coop_end")
    folder = copied("coop_end", tmp_path)
    assert main(import_argv(folder, spec, fixture_files, tmp_path / "a.safetensors", "--epoch", "2")) == 2
    err = capsys.readouterr().err
    assert f"no model.pth.tar-2 in {folder / 'prompt_learner'}" in err and "found model.pth.tar-1" in err
    best = learner_file(folder).with_name("model-best.pth.tar")
    shutil.copy(learner_file(folder), best)
    shutil.copy(learner_file(folder), learner_file(folder).with_name("model.pth.tar-5"))
    assert main(import_argv(folder, spec, fixture_files, tmp_path / "b.safetensors")) == 0
    assert json.loads(read_artifact(tmp_path / "b.safetensors").extra["imported_from"])["path"] == str(best)
    assert main(import_argv(folder / "prompt_learner" / "model.pth.tar-5", spec, fixture_files,
                            tmp_path / "c.safetensors")) == 0


def test_code_a_checkpoint_names_is_never_run(fixture_files, tmp_path, capsys):
    """A checkpoint whose pickle calls os.system when unpickled: the import reads its tensors and runs nothing."""
    spec, _ = released("coop_end")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    state = torch.load(learner_file(CHECKPOINTS / "coop_end"), weights_only=False)  # our own golden, trusted
    state["scheduler"] = {"successor": Payload()}
    hostile = tmp_path / "model.pth.tar-1"
    torch.save(state, hostile, pickle_protocol=2)
    assert main(import_argv(hostile, spec, fixture_files, tmp_path / "p.safetensors")) == 0
    assert not marker.exists()


def test_a_full_checkpoint_with_clips_weights_imports_the_same(fixture_files, tmp_path, capsys):
    """Released VPT / IVLP / MaPLe / PromptSRC / MetaPrompt files hold all of CLIP beside the prompts (the
    goldens leave it out): its weights are ignored, the prompts taken."""
    spec, logits = released("vpt")
    state = torch.load(learner_file(CHECKPOINTS / "vpt"), weights_only=False)  # our own golden, trusted
    clip_weights = torch.load(fixture_files[1], weights_only=False, map_location="cpu")
    clip_weights = clip_weights.state_dict() if hasattr(clip_weights, "state_dict") else clip_weights
    state["state_dict"] |= {f"image_encoder.{k[len('visual.'):]}": v for k, v in clip_weights.items()
                            if k.startswith("visual.")}
    state["state_dict"] |= {f"text_encoder.{k}": v for k, v in clip_weights.items() if k.startswith("transformer.")}
    full = tmp_path / "model.pth.tar-1"
    torch.save(state, full)
    assert len(state["state_dict"]) > 50
    out = tmp_path / "p.safetensors"
    assert main(import_argv(full, spec, fixture_files, out)) == 0, capsys.readouterr().err
    assert_equal(imported_logits(out, spec, fixture_files), logits, "vpt imported from a full checkpoint")


@pytest.mark.parametrize("name", ["coop_end", "maple"])
def test_a_checkpoint_trained_on_another_clip_is_one_line(name, fixture_files, tmp_path, capsys):
    """A Dassl checkpoint does not name its backbone, but the prompt learners save the start token's embedding
    (token_prefix): another CLIP's (here: the fixture's, perturbed) is refused."""
    spec, _ = released(name)
    path = learner_file(CHECKPOINTS / name)
    state = torch.load(path, weights_only=False)  # our own golden, trusted
    key = next(k for k in state["state_dict"] if k.endswith("token_prefix"))
    state["state_dict"][key] = state["state_dict"][key] + 0.05 * state["state_dict"][key].abs().max()
    other = tmp_path / "model.pth.tar-1"
    torch.save(state, other)
    assert main(import_argv(other, spec, fixture_files, tmp_path / "p.safetensors")) == 2
    err = capsys.readouterr().err
    assert "its token_prefix (the start token's embedding in the CLIP it was trained on) differs from" in err
    assert "pass its --model / --pretrained" in err


@pytest.mark.parametrize("content, expected", [
    (b"not a checkpoint", "not a readable torch checkpoint"),
    (None, "not a Dassl checkpoint (expected a dict whose 'state_dict' maps parameter names to tensors"),
])
def test_a_file_that_is_no_dassl_checkpoint_is_one_line(content, expected, fixture_files, tmp_path, capsys):
    spec, _ = released("coop_end")
    path = tmp_path / "model.pth.tar-1"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    assert main(import_argv(path, spec, fixture_files, tmp_path / "p.safetensors")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expected in err, err


def test_another_methods_checkpoint_and_a_disagreeing_option_are_one_line(fixture_files, tmp_path, capsys):
    spec, _ = released("vpt")
    coop = {**spec, "method": "coop", "config": {}}
    assert main(import_argv(learner_file(CHECKPOINTS / "vpt"), coop, fixture_files, tmp_path / "a.safetensors")) == 2
    assert "no trained tensor of coop's released trainer (expected keys such as prompt_learner.ctx" in \
        capsys.readouterr().err
    assert main(import_argv(CHECKPOINTS / "vpt", {**coop, "method": "zeroshot"}, fixture_files,
                            tmp_path / "z.safetensors")) == 2
    assert "--method zeroshot: expected the method whose released trainer wrote the checkpoint, one of coop" in \
        capsys.readouterr().err
    spec, _ = released("ivlp")
    disagreeing = {**spec, "config": {**spec["config"], "text_depth": 5}}
    assert main(import_argv(CHECKPOINTS / "ivlp", disagreeing, fixture_files, tmp_path / "b.safetensors")) == 2
    err = capsys.readouterr().err
    assert "--set text_depth=5 disagrees with the checkpoint" in err and "whose tensors have text_depth=3" in err


def test_the_safe_reader_makes_no_call_a_pickle_names_and_keeps_plain_containers():
    from metaprompt.dassl_checkpoint import SAFE_PICKLE

    class Payload:
        def __reduce__(self):
            return eval, ("1 / 0",)

    data = pickle.dumps({"a": Payload(), "b": [1, 2]}, protocol=2)
    loaded = SAFE_PICKLE.Unpickler(__import__("io").BytesIO(data)).load()
    assert loaded["b"] == [1, 2] and type(loaded["b"]) is list
    assert type(loaded["a"]).__name__ == "eval" and type(loaded["a"]).__module__ == "opaque:builtins"
    assert loaded["a"].args == ("1 / 0",)  # what the call would have been given, kept, never called


def test_the_class_names_can_come_from_the_dataset_as_the_released_trainer_saw_it(fixture_files, tmp_path, capsys):
    """A released base-to-new run trained on the dataset's base classes: --dataset/--root/--classes base gives
    them (here a descriptor's dataset: circle, square of circle, square, triangle)."""
    from data_layouts import make_own_dataset
    from test_descriptor import write_descriptor

    make_own_dataset(tmp_path)
    spec, _ = released("coop_end")
    argv = import_argv(CHECKPOINTS / "coop_end", spec, fixture_files, tmp_path / "p.safetensors")
    at = argv.index("--classnames")
    del argv[at:at + 2]
    argv[argv.index("--dataset") + 1] = str(write_descriptor(tmp_path))
    assert main(argv) == 0, capsys.readouterr().err
    assert read_artifact(tmp_path / "p.safetensors").classnames == ["circle", "square"]
    del argv[argv.index("--dataset"):argv.index("--dataset") + 2]
    assert main(argv) == 2
    assert "the class names are needed: give --dataset NAME --root DATA" in capsys.readouterr().err


def test_the_preset_names_the_method_when_method_is_left_out(fixture_files, tmp_path, capsys):
    spec, logits = released("maple")
    argv = import_argv(CHECKPOINTS / "maple", spec, fixture_files, tmp_path / "p.safetensors")
    at = argv.index("--method")
    argv[at:at + 2] = ["--preset", "maple_b2n"]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_artifact(tmp_path / "p.safetensors").method == "maple"
    assert_equal(imported_logits(tmp_path / "p.safetensors", spec, fixture_files), logits, "maple via its preset")


def test_a_sweep_evaluates_released_checkpoints_instead_of_training(fixture_files, tmp_path, capsys):
    """`run base2new --released-checkpoints PATTERN`: each run takes its seed's released checkpoint (here MaPLe's
    golden, laid out as PromptSRC / MaPLe publish theirs: <dataset>/base/seed<N>/<learner>/), is tested as a
    trained run is, records where its prompts came from, and is a column of its own in the report."""
    from data_layouts import make_own_dataset
    from metaprompt.dassl_checkpoint import read_checkpoint, released_tensors
    from test_descriptor import write_descriptor

    make_own_dataset(tmp_path)
    dataset = str(write_descriptor(tmp_path, domains=[], root="shapes/photo"))
    for seed in (1, 2):
        shutil.copytree(CHECKPOINTS / "maple", tmp_path / "weights" / "shapes" / "base" / f"seed{seed}")
    out = tmp_path / "results"
    argv = ["run", "base2new", "--method", "maple", "--model", fixture_files[0], "--pretrained", fixture_files[1],
            "--datasets", dataset, "--seeds", "1", "2", "--out", str(out), "--no-progress", "--workers", "0",
            "--released-checkpoints", str(tmp_path / "weights" / "{dataset}" / "base" / "seed{seed}")]
    assert main([*argv, "--set", "depth=2"]) == 2
    err = capsys.readouterr().err
    assert "its prompts have depth=3, this run's config depth=2: pass --set depth=3" in err, err
    assert main([*argv, "--set", "depth=3"]) == 0, capsys.readouterr().err
    expected = released_tensors(read_checkpoint(learner_file(CHECKPOINTS / "maple")), "maple")
    for seed in (1, 2):
        folder = out / "base2new" / "maple-released" / "shapes" / f"seed{seed}"
        result = json.loads((folder / "result.json").read_text())
        assert set(result["metrics"]) == {"base", "new", "hm"}
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["train_steps"] == 0 and metrics["imported_from"]["path"].endswith("model.pth.tar-1")
        artifact = read_artifact(folder / "prompts.safetensors")
        assert json.loads(artifact.extra["imported_from"])["sha256"] == metrics["imported_from"]["sha256"]
        for key, tensor in expected.items():
            assert torch.equal(artifact.tensors[key], tensor), key
    capsys.readouterr()
    assert main(["report", str(out), "--figure", str(tmp_path / "f.png")]) == 0
    assert "maple-released† Base" in capsys.readouterr().out  # † its depth and model depart from the preset


def test_released_checkpoints_need_a_pattern_and_a_method_with_a_released_trainer(tmp_path, capsys):
    base = ["run", "base2new", "--model", "world-tiny", "--datasets", "dtd", "--root", str(tmp_path),
            "--out", str(tmp_path / "o")]
    assert main([*base, "--method", "coop", "--released-checkpoints", "w/{dataset}/{sed}"]) == 2
    assert "--released-checkpoints 'w/{dataset}/{sed}': expected a path with {dataset}, {seed}" in \
        capsys.readouterr().err
    assert main([*base, "--method", "zeroshot", "--released-checkpoints", "w/{dataset}/seed{seed}"]) == 2
    assert "with --method zeroshot: expected a method with a released prompt trainer" in capsys.readouterr().err


def test_a_checkpoint_in_torchs_legacy_format_reads_the_same(tmp_path):
    """Checkpoints written by torch < 1.6 (Dassl's early releases) are no zip archive: the same reader takes them."""
    from metaprompt.dassl_checkpoint import read_checkpoint, released_tensors

    state = torch.load(learner_file(CHECKPOINTS / "maple"), weights_only=False)  # our own golden, trusted
    legacy = tmp_path / "model.pth.tar-1"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    ours = released_tensors(read_checkpoint(legacy), "maple")
    expected = released_tensors(read_checkpoint(learner_file(CHECKPOINTS / "maple")), "maple")
    assert ours.keys() == expected.keys() and all(torch.equal(ours[k], expected[k]) for k in expected)


def test_a_released_checkpoint_that_is_not_there_is_one_line_naming_it(fixture_files, tmp_path, capsys):
    from data_layouts import make_own_dataset
    from test_descriptor import write_descriptor

    make_own_dataset(tmp_path)
    dataset = str(write_descriptor(tmp_path, domains=[], root="shapes/photo"))
    pattern = str(tmp_path / "weights" / "{dataset}" / "seed{seed}")
    assert main(["run", "base2new", "--method", "coop", "--model", fixture_files[0], "--pretrained", fixture_files[1],
                 "--datasets", dataset, "--seeds", "1", "--out", str(tmp_path / "o"), "--no-progress",
                 "--released-checkpoints", pattern]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'weights' / 'shapes' / 'seed1'} does not exist (expected a released trainer's output" in err
    spec, _ = released("coop_end")
    assert main(import_argv(learner_file(CHECKPOINTS / "coop_end"), spec, fixture_files, tmp_path / "p.safetensors",
                            "--epoch", "1")) == 2
    assert "--epoch 1 with a checkpoint file" in capsys.readouterr().err
