"""The workflow around the computation (issue 20): every method runs offline on the world with no flag but
the model, records say what took effect, eval on a DG dataset scores what `run dg` scores."""
from __future__ import annotations

import json

import pytest
import yaml

from metaprompt.cli import main
from metaprompt.config import DEFAULT_PRESETS, resolve

METHODS = list(DEFAULT_PRESETS)


@pytest.mark.parametrize("method", METHODS)
def test_world_tiny_picks_the_methods_world_preset_and_its_shipped_weights(method):
    cfg = resolve(method, model="world-tiny")
    assert cfg.preset.startswith(f"world_{method}") and cfg.model == "world-tiny" and cfg.pretrained is None
    dg = resolve(method, model="world-tiny", protocol="dg")
    assert dg.preset in (f"world_{method}_dg", cfg.preset)
    # a published preset on the world model: the world's own weights, not the preset's tag
    assert resolve(method, DEFAULT_PRESETS[method], model="world-tiny").pretrained is None
    assert resolve(method, model="world-tiny", pretrained="/w.safetensors").pretrained == "/w.safetensors"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_the_world_with_only_the_model_named(method, world_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--method", method, "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
            "--classes", "base", "--out", str(out)]
    assert main([*args, "--set", "max_steps=1", "--no-progress"]) == 0, capsys.readouterr().err
    config = yaml.safe_load((out / "config.yaml").read_text())["run"]
    assert config["model"] == "world-tiny" and config["pretrained"] is None
    assert config["preset"].startswith(f"world_{method}")
    assert json.loads((out / "metrics.json").read_text())["num_classes"] == 30


@pytest.mark.parametrize("method, option", [("metaprompt", "text_depth"), ("ivlp", "text_depth"),
                                            ("maple", "depth"), ("vpt", "depth")])
def test_a_prompt_depth_the_model_lacks_names_the_methods_own_option(method, option, world_root, tmp_path, capsys):
    args = ["train", "--method", method, "--preset", DEFAULT_PRESETS[method], "--model", "world-tiny",
            "--dataset", "world", "--root", str(world_root), "--classes", "base", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--set {option}=4" in err, err
    assert not (tmp_path / "run").exists()


def test_eval_with_a_target_domain_scores_what_run_dg_scored(world_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "dg", "--method", "coop", "--model", "world-tiny", "--dataset", "world_dg", "--shots", "1",
                 "--targets", "sketch", "--seeds", "1", "--root", str(world_root), "--out", str(out),
                 "--set", "max_steps=2", "--no-progress"]) == 0
    run = out / "dg" / "coop" / "world_dg" / "shots1" / "sketch" / "seed1"
    accuracy = json.loads((run / "result.json").read_text())["metrics"]["accuracy"]
    capsys.readouterr()
    eval_args = ["eval", "--prompts", str(run / "prompts.safetensors"), "--dataset", "world_dg",
                 "--root", str(world_root), "--no-progress"]
    assert main([*eval_args, "--target-domain", "sketch"]) == 0
    assert f"accuracy: {accuracy:.2f}% (" in capsys.readouterr().out
    assert main(eval_args) == 0  # no target: says it scored every domain, and each domain's accuracy
    out_text = capsys.readouterr().out
    assert "no --target-domain was given" in out_text and f"sketch {accuracy:.2f}%" in out_text
