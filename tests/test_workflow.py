"""The workflow around the computation (issue 20): every method runs offline on the world with no flag but
the model, records say what took effect, eval on a DG dataset scores what `run dg` scores."""
from __future__ import annotations

import json
import re

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


# ------------------------------------------------------------------ records say what took effect

@pytest.mark.parametrize("method", ["coop", "kgcoop"])
def test_n_ctx_given_alone_is_what_the_artifact_config_and_departures_hold(method, world_root, tmp_path, capsys):
    from metaprompt.artifact import read_artifact

    out = tmp_path / "run"
    assert main(["train", "--method", method, "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
                 "--classes", "base", "--out", str(out), "--set", "n_ctx=8", "--set", "max_steps=1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "n_ctx=8 given: the context starts from 8 random vectors" in err
    assert read_artifact(out / "prompts.safetensors").tensors["text_prompts"].shape[1] == 8
    method_config = yaml.safe_load((out / "config.yaml").read_text())["run"]["method_config"]
    assert (method_config["n_ctx"], method_config["ctx_init"]) == (8, "")


def test_n_ctx_and_ctx_init_that_disagree_are_refused_naming_both(capsys):
    assert main(["config", "--method", "coop", "--set", "n_ctx=8", "--set", "ctx_init=a photo"]) == 2
    assert "n_ctx 8 and ctx_init 'a photo' (2 words) disagree" in capsys.readouterr().err


def test_ctx_init_none_means_no_words():
    assert resolve("coop", sets=["ctx_init=none"]).method_config.ctx_init == ""
    assert resolve("ivlp", sets=["ctx_init=None"]).method_config.ctx_init == ""


def test_a_user_preset_that_follows_a_released_file_records_its_departures(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("method: coop\nfollows: KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml\n"
                    "method_config: {n_ctx: 4, ctx_init: a photo of a}\ntrain: {batch_size: 32, lr: 0.01, epochs: 200}\n")
    cfg = resolve(preset=str(mine)).for_task("eurosat")
    assert cfg.departures == {"train.lr": {"published": 0.002, "used": 0.01}}
    unknown = tmp_path / "other.yaml"
    unknown.write_text("method: coop\nfollows: someone/else config.yaml\n")
    assert "no shipped coop preset follows" in resolve(preset=str(unknown)).notes[0]


def test_shots_depart_unless_published_and_unused_settings_never_do():
    assert resolve("coop", sets=["shots=4"]).for_task("eurosat").departures == {
        "train.shots": {"published": 16, "used": 4}}
    for shots in (1, 5):  # the DG paper's shots
        assert resolve("metaprompt", "metaprompt_dg", sets=[f"shots={shots}"]).for_task("pacs").departures == {}
    assert "train.shots" in resolve("metaprompt", "metaprompt_dg", sets=["shots=2"]).for_task("pacs").departures
    assert resolve("zeroshot", sets=["epochs=1", "lr=0.1", "shots=4"]).for_task("eurosat").departures == {}
    assert resolve("linear_probe", sets=["epochs=3"]).for_task("eurosat").departures == {}


def test_config_prints_the_resolved_configuration_and_departures_without_running(capsys):
    assert main(["config", "--method", "coop", "--dataset", "imagenet", "--set", "lr=0.01"]) == 0
    out = capsys.readouterr().out
    record = yaml.safe_load(out)
    assert record["train"]["epochs"] == 50 and record["train"]["lr"] == 0.01  # ImageNet's variant, the user's LR
    assert record["follows"].endswith("vit_b16_ep50_ctxv1.yaml")
    assert "# this run departs from the published config" in out and "lr=0.01 (published 0.002)" in out
    assert main(["config", "--method", "metaprompt", "--model", "world-tiny", "--protocol", "dg"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["preset"] == "world_metaprompt_dg"


# ------------------------------------------------------------------ run records

def test_a_run_folder_holds_a_plain_log_and_what_produced_it(world_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
            "--classes", "base", "--out", str(out), "--set", "epochs=2"]
    assert main(args) == 0  # progress asked for, but stderr is no terminal here: a line per epoch instead of bars
    printed = capsys.readouterr()
    assert "\r" not in printed.err and "epoch 2/2: loss" in printed.out and "about 0 s left" in printed.out
    log = (out / "log.txt").read_text()
    assert "\r" not in log
    lines = log.splitlines()
    assert lines[0].endswith("command: metaprompt " + " ".join(args))
    assert "git commit" in lines[1] and "torch " in lines[1] and "open_clip_torch " in lines[1]
    assert any("epoch 1/2: loss" in line for line in lines)
    assert "coop on world (base classes): test accuracy" in lines[-1]
    environment = json.loads((out / "metrics.json").read_text())["environment"]
    assert environment["command"] == "metaprompt " + " ".join(args)
    assert environment["packages"]["open_clip_torch"] and "git_commit" in environment
    assert not (out / "checkpoint.pt").exists()  # a finished run keeps no checkpoint
    capsys.readouterr()
    assert main(args) == 0  # a finished run: said so, exit 0, nothing written
    assert "holds this run, finished" in capsys.readouterr().out and (out / "log.txt").read_text() == log


def test_a_stale_temporary_file_is_cleaned_when_the_run_starts(world_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt.4242-1.tmp").write_bytes(b"half a checkpoint")
    assert main(["train", "--method", "zeroshot", "--model", "world-tiny", "--dataset", "world",
                 "--root", str(world_root), "--out", str(out), "--no-progress"]) == 0
    assert not list(out.glob("*.tmp"))


def test_a_sweep_run_logs_to_its_folder_and_tensorboard_has_base_and_new(world_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    assert main(["run", "base2new", "--method", "coop", "--model", "world-tiny", "--datasets", "world",
                 "--seeds", "1", "--root", str(world_root), "--out", str(out), "--set", "epochs=1",
                 "--no-progress", "--keep-checkpoint"]) == 0
    run = out / "base2new" / "coop" / "world" / "seed1"
    result = json.loads((run / "result.json").read_text())
    log = (run / "log.txt").read_text()
    assert "base2new coop world seed 1: started" in log and "base2new coop world seed 1: done in" in log
    assert "epoch 1/1: loss" in log and (run / "checkpoint.pt").is_file()  # kept, as asked
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"test/base_accuracy", "test/new_accuracy", "test/hm"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/new_accuracy")[-1].value == pytest.approx(result["metrics"]["new"], abs=1e-4)
    assert result["environment"]["command"].startswith("metaprompt run base2new")


# ------------------------------------------------------------------ the report compares like with like

def b2n_result(seed, base, new, dataset="dtd", name="coop", **fields):
    sweep = {"model": fields.pop("model", "ViT-B-16"), "pretrained": "openai", "train.lr": fields.pop("lr", 0.002)}
    return {"protocol": "base2new", "name": name, "method": name, "dataset": dataset, "seed": seed,
            "shots": fields.pop("shots", 16), "metrics": {"base": base, "new": new, "hm": 2 * base * new / (base + new)},
            "sweep": sweep, **fields}


def columns_of(results):
    from metaprompt.results import build_report

    table = build_report(results).tables[0]
    return table, {column: [row[1][i] for row in table.rows] for i, column in enumerate(table.columns)}


def test_runs_of_other_shots_are_other_columns_each_seed_counted_once():
    results = [b2n_result(1, 50.0, 50.0, shots=2), b2n_result(1, 50.0, 50.0, shots=2),  # one seed, twice
               b2n_result(1, 80.0, 60.0, shots=4), b2n_result(2, 70.0, 60.0, shots=4)]
    table, columns = columns_of(results)
    assert "coop (shots=2) Base" in columns and "coop (shots=4) Base" in columns
    two = columns["coop (shots=2) Base"][0]
    assert (two.mean, two.seeds) == (50.0, 1)  # counted once, not "50.00 ± 0.00" over two
    four = columns["coop (shots=4) Base"][0]
    assert (four.mean, four.seeds) == (75.0, 2)


def test_runs_of_other_models_are_other_columns_labelled_by_what_differs():
    results = [b2n_result(1, 10.0, 10.0, model="world-tiny"), b2n_result(1, 90.0, 90.0, model="ViT-B-16", lr=0.01)]
    _, columns = columns_of(results)
    assert {c for c in columns if c.endswith(" Base")} == {"coop (model=ViT-B-16, lr=0.01) Base",
                                                           "coop (model=world-tiny, lr=0.002) Base"}


def test_the_average_says_how_many_datasets_each_method_covers():
    from metaprompt.results import render

    results = [b2n_result(1, 80.0, 60.0, dataset="dtd"), b2n_result(1, 70.0, 50.0, dataset="eurosat"),
               b2n_result(1, 60.0, 60.0, dataset="dtd", name="metaprompt")]
    table, columns = columns_of(results)
    assert columns["coop Base"][-1].covers == (2, 11) and columns["metaprompt Base"][-1].covers == (1, 11)
    md = render([table])
    assert "(2/11)" in md and "(1/11)" in md and "of the protocol's n datasets" in md
    assert table.title == "Base-to-new generalisation (16 shots)"


def test_a_departure_is_marked_and_listed_under_the_table():
    departing = b2n_result(1, 80.0, 60.0, follows="KaiyangZhou/CoOp x.yaml",
                           departures={"train.lr": {"published": 0.002, "used": 0.01}})
    table, columns = columns_of([departing])
    assert "coop† Base" in columns
    assert "coop† departs from KaiyangZhou/CoOp x.yaml: lr=0.01 (published 0.002)" in table.note


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe garbage", "unreadable result"),
    (b"[1, 2]", "expected a JSON object, found list"),
    (b"{}", "expected 'protocol' to be a str"),
    (json.dumps({**b2n_result(1, 1.0, 1.0), "metrics": {"base": float("nan"), "new": 1.0}}).encode(),
     "expected metrics to be accuracies"),
    (json.dumps({**b2n_result(1, 1.0, 1.0), "metrics": {"base": 1e308, "new": 1.0}}).encode(),
     "expected metrics to be accuracies"),
    (json.dumps({**b2n_result(1, 1.0, 1.0), "metrics": {"base": "high", "new": 1.0}}).encode(),
     "expected metrics to be accuracies"),
    (json.dumps({**b2n_result(1, 1.0, 1.0), "seed": "one"}).encode(), "expected 'seed' to be a int"),
])
def test_report_skips_a_damaged_result_naming_it_and_goes_on(content, expected, tmp_path, capsys):
    good, bad = tmp_path / "good" / "result.json", tmp_path / "bad" / "result.json"
    good.parent.mkdir()
    bad.parent.mkdir()
    good.write_text(json.dumps(b2n_result(1, 80.0, 60.0, cost={"train_seconds": "NaN-ish", "eval_seconds": 1.0})))
    bad.write_bytes(content)
    assert main(["report", str(tmp_path), "--figure", str(tmp_path / "f.png")]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("metaprompt: warning")]
    assert len(warnings) == 1 and f"skipped {bad}" in warnings[0] and expected in warnings[0], captured.err
    assert "| dtd | 80.00 | 60.00 |" in captured.out


@pytest.mark.parametrize("argv, expected", [
    (["--seeds", str(2**32)], "train.seed must be a number in [0, 4294967296)"),
    (["--set", "lr=inf"], "train.lr must be a number, got inf"),
    (["--name", "../../x"], "--name '../../x': expected a plain folder name"),
    (["--lease-timeout", "nan"], "--lease-timeout must be a positive number of seconds"),
])
def test_bad_sweep_options_are_one_line(argv, expected, world_root, tmp_path, capsys):
    assert main(["run", "base2new", "--method", "coop", "--model", "world-tiny", "--datasets", "world",
                 "--root", str(world_root), "--out", str(tmp_path / "out"), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out" / "base2new").exists() and not (tmp_path / "x").exists()


def test_xd_with_the_source_among_its_targets_is_refused(world_root, tmp_path, capsys):
    assert main(["run", "xd", "--method", "coop", "--model", "world-tiny", "--source", "world", "--targets",
                 "world", "--root", str(world_root), "--out", str(tmp_path)]) == 2
    assert "world is the source dataset" in capsys.readouterr().err


# ------------------------------------------------------------------ adversarial inputs, one line each

def damaged_eurosat(tmp_path, change):
    from data_layouts import make_coop_dataset

    folder = make_coop_dataset(tmp_path, "eurosat")
    split_file = next(folder.glob("split_zhou_*.json"))
    data = json.loads(split_file.read_text())
    change(data, split_file, folder)
    return split_file


def check_line(tmp_path, capsys, expected):
    assert main(["data", "check", "--root", str(tmp_path), "--dataset", "eurosat"]) != 0
    out = capsys.readouterr()
    assert expected in out.out + out.err, out


def test_bad_bytes_in_a_split_file_name_the_file_and_line(tmp_path, capsys):
    def bad_bytes(data, path, folder):
        path.write_bytes(b'{\n"train": [],\n"val": [\xff\xfe]}')

    split_file = damaged_eurosat(tmp_path, bad_bytes)
    check_line(tmp_path, capsys, f"{split_file}: line 3: byte 0xff is not UTF-8 text")


def test_bad_bytes_in_a_list_file_name_the_file_and_line(tmp_path, capsys):
    from data_layouts import make_fgvc_aircraft

    folder = make_fgvc_aircraft(tmp_path)
    (folder / "variants.txt").write_bytes(b"707-320\n727-200\nA3\xe900\n")
    assert main(["data", "check", "--root", str(tmp_path), "--dataset", "fgvc_aircraft"]) != 0
    out = capsys.readouterr()
    assert f"{folder / 'variants.txt'}: line 3: byte 0xe9 is not UTF-8 text" in out.out + out.err


@pytest.mark.parametrize("escape", ["../../outside.jpg", "/etc/hostname"])
def test_split_file_paths_stay_under_the_root(escape, tmp_path, capsys):
    def escaping(data, path, folder):
        data["test"][0][0] = escape
        path.write_text(json.dumps(data))

    split_file = damaged_eurosat(tmp_path / "data", escaping)
    (tmp_path / "outside.jpg").write_bytes(b"not read")
    check_line(tmp_path / "data", capsys, f"{split_file}: 'test' entry 1 names {escape!r}, which lies outside")


def test_two_labels_sharing_a_name_are_refused(tmp_path, capsys):
    def shared(data, path, folder):
        name = data["train"][0][2]
        for split in data.values():
            for entry in split:
                if entry[1] == 1:
                    entry[2] = name
        path.write_text(json.dumps(data))

    damaged_eurosat(tmp_path, shared)
    check_line(tmp_path, capsys, "labels 0, 1 are all named")


def test_duplicate_fgvc_variants_are_refused(tmp_path, capsys):
    from data_layouts import make_fgvc_aircraft

    folder = make_fgvc_aircraft(tmp_path)
    (folder / "variants.txt").write_text("707-320\n727-200\nA300B4\n707-320\n")
    assert main(["data", "check", "--root", str(tmp_path), "--dataset", "fgvc_aircraft"]) != 0
    out = capsys.readouterr()
    assert "'707-320' listed more than once" in out.out + out.err


def test_data_check_refuses_negative_shots(tmp_path, capsys):
    assert main(["data", "check", "--root", str(tmp_path), "--shots", "-5"]) == 2
    assert "--shots -5: expected the shots per class to check against, 1 or more" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world_artifact(tmp_path_factory):
    from metaprompt.world import render_world

    root = tmp_path_factory.mktemp("w")
    render_world(root / "world", seed=0, train_per_class=1, test_per_class=1, val_per_class=1, progress=False)
    run = root / "run"
    assert main(["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(root),
                 "--classes", "base", "--out", str(run), "--set", "max_steps=1", "--no-progress"]) == 0
    return run / "prompts.safetensors"


def rewritten(artifact, tmp_path, tensors=None, **meta_changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(artifact), framework="pt") as f:
        meta = dict(f.metadata())
        loaded = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_changes)
    path = tmp_path / "changed.safetensors"
    save_file(tensors(loaded) if tensors else loaded, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"config": "[1, 2]"}, "metadata's config is [1, 2]; expected a JSON object"),
    ({"classnames": '{"a": 1}'}, "metadata's classnames is {'a': 1}; expected a list"),
    ({"classnames": '["cat", "cat"]'}, "class names repeat 'cat'"),
    ({"pretrained": '"/somewhere/weights.pt"'}, "a file named in an artifact is not opened unless you name it"),
    ({"model": "/somewhere/model.json"}, "not opened unless you name it: pass --model FILE"),
])
def test_artifact_metadata_of_the_wrong_kind_is_one_line(changes, expected, world_artifact, tmp_path, capsys):
    path = rewritten(world_artifact, tmp_path, **changes)
    assert main(["predict", "--prompts", str(path), str(next(world_artifact.parent.parent.rglob("*.png")))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_nan_prompts_are_refused(world_artifact, tmp_path, capsys):
    path = rewritten(world_artifact, tmp_path, tensors=lambda t: {k: v * float("nan") for k, v in t.items()})
    assert main(["predict", "--prompts", str(path), str(next(world_artifact.parent.parent.rglob("*.png")))]) == 2
    assert "text_prompts hold NaN or infinite values" in capsys.readouterr().err


def test_a_world_weights_file_that_is_not_safetensors_is_one_line(world_artifact, tmp_path, capsys):
    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"\x80\x04 a pickle, never unpickled")
    image = str(next(world_artifact.parent.parent.rglob("*.png")))
    assert main(["predict", "--prompts", str(world_artifact), "--pretrained", str(bogus), image]) == 2
    assert f"{bogus}: not a world CLIP checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("classes, expected", [("", "expected comma-separated class names"),
                                               ("cat, dog, cat", "'cat' given more than once")])
def test_classes_given_empty_or_twice_are_refused(classes, expected, world_artifact, tmp_path, capsys):
    image = str(next(world_artifact.parent.parent.rglob("*.png")))
    assert main(["predict", "--prompts", str(world_artifact), image, "--classes", classes]) == 2
    assert expected in capsys.readouterr().err
    assert main(["export", "--prompts", str(world_artifact), "--classes", classes, "--out", str(tmp_path / "h")]) == 2
    assert expected in capsys.readouterr().err


def test_a_checkpoint_without_its_random_state_is_one_line(world_root, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    args = ["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
            "--classes", "base", "--out", str(run), "--set", "epochs=2", "--set", "max_steps=1", "--no-progress"]
    assert main(args) == 0
    (run / "prompts.safetensors").unlink()  # as if stopped after its first checkpoint
    (run / "metrics.json").unlink()
    main([*args[:-3], "--keep-checkpoint", "--set", "max_steps=1", "--no-progress"])
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    del checkpoint["rng"]
    torch.save(checkpoint, run / "checkpoint.pt")
    (run / "prompts.safetensors").unlink()
    (run / "metrics.json").unlink()
    capsys.readouterr()
    assert main(args) == 2
    assert "does not hold this run's training state (no 'rng')" in capsys.readouterr().err


def test_a_fewshot_record_without_its_lists_is_one_line(world_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
            "--classes", "base", "--out", str(run), "--set", "max_steps=1", "--no-progress", "--keep-checkpoint"]
    assert main(args) == 0
    (run / "prompts.safetensors").unlink()
    (run / "fewshot.json").write_text('{"dataset": "world", "shots": 16, "seed": 1}')
    capsys.readouterr()
    assert main(args) == 2
    assert "fewshot.json: expected the draw a run records" in capsys.readouterr().err


def test_a_lease_with_a_malformed_or_future_heartbeat_never_holds_a_run_forever(tmp_path):
    import time

    from metaprompt.errors import MetapromptError
    from metaprompt.leases import Claim, Leases

    leases = Leases(tmp_path, stale_after=60)
    run = tmp_path / "base2new" / "coop" / "world" / "seed1"
    holder = {"host": "another-host", "pid": 1, "started": time.time(), "token": "t"}
    for heartbeat in ("soon", time.time() + 10**9, None):
        leases.path(run).write_text(json.dumps({**holder, "heartbeat": heartbeat}))
        claim = leases.claim(run)
        assert isinstance(claim, Claim), heartbeat
        claim.release()
    for timeout in (float("nan"), 0, -1, float("inf")):
        with pytest.raises(MetapromptError, match="expected a positive number of seconds"):
            Leases(tmp_path, stale_after=timeout)


def test_report_ci95_is_the_confidence_interval_parse_test_res_gives(tmp_path, capsys):
    import math
    from statistics import pstdev

    bases = [80.0, 70.0, 75.0]
    for seed, base in enumerate(bases, start=1):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps(b2n_result(seed, base, 50.0)))
    assert main(["report", str(tmp_path), "--ci95", "--figure", str(tmp_path / "f.png")]) == 0
    half_width = 1.96 * pstdev(bases) / math.sqrt(3)  # parse_test_res.py: 1.96 * np.std(res) / np.sqrt(len(res))
    assert f"| dtd | 75.00 ± {half_width:.2f} |" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--format", "csv", "--figure", str(tmp_path / "f.png")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if ",dtd,coop Base," in line)
    assert row.endswith(f",{half_width:.4f}")


def test_runs_and_eval_record_per_class_accuracy_macro_f1_and_the_confusion_matrix(world_root, tmp_path, capsys):
    import numpy as np
    from sklearn.metrics import confusion_matrix, f1_score

    out = tmp_path / "out"
    assert main(["run", "base2new", "--method", "coop", "--model", "world-tiny", "--datasets", "world", "--seeds", "1",
                 "--root", str(world_root), "--out", str(out), "--set", "max_steps=1", "--no-progress"]) == 0
    run = out / "base2new" / "coop" / "world" / "seed1"
    result = json.loads((run / "result.json").read_text())
    capsys.readouterr()
    dump = tmp_path / "new.npz"
    assert main(["eval", "--prompts", str(run / "prompts.safetensors"), "--dataset", "world", "--root",
                 str(world_root), "--classes", "new", "--dump-logits", str(dump), "--per-class", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = np.load(dump)
    predicted, labels = data["logits"].argmax(1), data["labels"]
    n = len(data["classnames"])
    new = result["details"]["new"]
    assert new["confusion"] == confusion_matrix(labels, predicted, labels=list(range(n))).tolist()
    present = sorted(set(labels.tolist()))
    expected_f1 = 100 * f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
    assert new["macro_f1"] == pytest.approx(expected_f1, abs=1e-6)
    first = str(data["classnames"][0])
    assert new["per_class_accuracy"][first] == pytest.approx(100 * np.mean(predicted[labels == 0] == 0))
    assert f"macro-F1: {expected_f1:.2f}%" in printed and f"  {first}: " in printed
    assert set(result["details"]) == {"base", "new"} and result["details"]["base"]["confusion"]


def test_interpret_names_the_words_a_context_started_from(world_root, tmp_path, capsys):
    """An untrained CoOp context is the embedding of "a photo of a": its nearest words are those, at distance 0."""
    run = tmp_path / "run"
    assert main(["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
                 "--classes", "base", "--out", str(run), "--set", "epochs=0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["interpret", "--prompts", str(run / "prompts.safetensors"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("ctx 1: a</w> (0.0000), ") and lines[2].startswith("ctx 2: photo</w> (0.0000), ")
    assert lines[3].startswith("ctx 3: of</w> (0.0000), ") and lines[4].startswith("ctx 4: a</w> (0.0000), ")
    assert main(["interpret", "--prompts", str(run / "prompts.safetensors"), "--top-k", "0"]) == 2
    assert "--top-k 0: expected 1 to" in capsys.readouterr().err


def test_a_class_subset_with_a_target_domain_and_a_missing_preset_file_are_one_line(world_root, tmp_path, capsys):
    assert main(["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world_dg", "--root",
                 str(world_root), "--target-domain", "sketch", "--classes", "new", "--out", str(tmp_path / "r")]) == 2
    assert "--classes new with --target-domain" in capsys.readouterr().err
    assert main(["config", "--preset", str(tmp_path / "mine.yaml")]) == 2
    assert f"preset file {tmp_path / 'mine.yaml'} not found" in capsys.readouterr().err


def test_a_preset_that_starts_from_a_shipped_one_changes_its_keys_and_records_them_as_departures(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: coop_b2n\ntrain: {lr: 0.01, epochs: 20}\n")
    cfg = resolve(preset=str(mine)).for_task("imagenet")  # ImageNet's variant replaces no key the file sets
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (0.01, 20, 32)
    assert cfg.follows.endswith("vit_b16_ep50_ctxv1.yaml") and cfg.preset == str(mine)
    assert cfg.departures == {"train.lr": {"published": 0.002, "used": 0.01},
                              "train.epochs": {"published": 50, "used": 20}}


@pytest.mark.parametrize("text, expected", [
    ("base: coop_b2n\nmethod: ivlp\n", "its base coop_b2n is a coop preset, not ivlp"),
    ("base: coop_b2n\nfollows: someone/else.yaml\n", "a preset with 'base' sets method_config, train, model and "
                                                      "pretrained only; found follows"),
    ("base: coop_b2n\ntrain: {lr: -1}\n", "train.lr must be a number > 0"),
    ("base: SELF\n", "more than 8 deep (a cycle?)"),
])
def test_a_base_preset_that_cannot_work_is_one_line(text, expected, tmp_path):
    from metaprompt.errors import MetapromptError

    mine = tmp_path / "mine.yaml"
    mine.write_text(text.replace("SELF", str(mine)))
    with pytest.raises(MetapromptError, match=re.escape(expected)):
        resolve(preset=str(mine))


# ------------------------------------------------------------------ optimisers and LR schedules by name

@pytest.mark.parametrize("scheduler, steps, reference", [
    ("single_step", [3], lambda opt: __import__("torch").optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)),
    ("multi_step", [2, 5], lambda opt: __import__("torch").optim.lr_scheduler.MultiStepLR(opt, [2, 5], gamma=0.5)),
    ("constant", [], lambda opt: __import__("torch").optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)),
])
def test_each_lr_schedule_is_torchs_after_the_warm_up(scheduler, steps, reference):
    import torch

    from metaprompt.config import TrainConfig
    from metaprompt.engine import lr_at_epoch

    cfg = TrainConfig(epochs=9, lr=0.1, warmup_epochs=1, warmup_lr=1e-5, lr_scheduler=scheduler, stepsize=steps,
                      gamma=0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule, expected = reference(optimizer), []
    for _ in range(8):  # the successor counts its epochs from the end of the warm-up (WARMUP_RECOUNT)
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lr_at_epoch(cfg, 0) == 1e-5
    assert [lr_at_epoch(cfg, e) for e in range(1, 9)] == pytest.approx(expected)


def test_adam_trains_and_is_a_departure(world_root, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    assert main(["train", "--method", "coop", "--preset", "coop_b2n", "--model", "world-tiny", "--dataset", "world",
                 "--root", str(world_root), "--classes", "base", "--out", str(run), "--set", "optimizer=adam",
                 "--set", "epochs=2", "--set", "max_steps=2", "--no-progress", "--keep-checkpoint"]) == 0
    assert "optimizer='adam' (published 'sgd')" in capsys.readouterr().err
    state = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(state.values())))  # Adam's moments, not SGD's momentum


@pytest.mark.parametrize("sets, expected", [
    (["optimizer=lion"], "train.optimizer must be one of 'sgd', 'adam', 'adamw'"),
    (["lr_scheduler=single_step"], "single_step needs one step length"),
    (["lr_scheduler=multi_step", "stepsize=[5,2]"], "multi_step needs increasing epochs"),
    (["stepsize=[0]"], "train.stepsize must be a list of epoch counts >= 1"),
])
def test_bad_optimiser_or_schedule_settings_are_one_line(sets, expected, capsys):
    assert main(["config", "--method", "coop", *[a for s in sets for a in ("--set", s)]]) == 2
    assert expected in capsys.readouterr().err


# ------------------------------------------------------------------ model selection

def selection_run(world_root, out, *sets):
    args = ["train", "--method", "coop", "--model", "world-tiny", "--dataset", "world", "--root", str(world_root),
            "--classes", "base", "--out", str(out), "--set", "epochs=4", "--set", "lr=0.5", "--no-progress"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    return out


def test_best_val_keeps_the_epoch_with_the_best_validation_accuracy(world_root, tmp_path, capsys):
    from metaprompt.artifact import read_artifact

    run = selection_run(world_root, tmp_path / "best", "final_model=best_val", "checkpoint_freq=1")
    accuracies = []
    assert "metaprompt: warning" not in capsys.readouterr().err  # the world preset follows no released file
    for epoch in range(1, 5):  # each epoch's prompts, evaluated on the validation split independently
        capsys.readouterr()
        assert main(["eval", "--prompts", str(run / "epochs" / f"prompts-epoch{epoch}.safetensors"), "--dataset",
                     "world", "--root", str(world_root), "--classes", "base", "--split", "val",
                     "--no-progress"]) == 0
        accuracies.append(float(capsys.readouterr().out.split("accuracy: ")[1].split("%")[0]))
    best = accuracies.index(max(accuracies)) + 1  # the first of equals, as the run keeps it
    selection = json.loads((run / "metrics.json").read_text())["selection"]
    assert selection["final_model"] == "best_val" and selection["best_epoch"] == best
    assert selection["best_val_accuracy"] == pytest.approx(max(accuracies), abs=0.01)
    final = read_artifact(run / "prompts.safetensors").tensors["text_prompts"]
    chosen = read_artifact(run / "epochs" / f"prompts-epoch{best}.safetensors").tensors["text_prompts"]
    assert final.equal(chosen)
    departing = resolve("coop", sets=["final_model=best_val"]).for_task("eurosat").departures
    assert departing == {"train.final_model": {"published": "last", "used": "best_val"}}


def test_selection_leaves_training_as_it_was(world_root, tmp_path):
    from metaprompt.artifact import read_artifact

    plain = selection_run(world_root, tmp_path / "plain")
    kept = selection_run(world_root, tmp_path / "kept", "final_model=best_val", "checkpoint_freq=1",
                         "keep_checkpoints=2")
    last = read_artifact(kept / "epochs" / "prompts-epoch4.safetensors").tensors["text_prompts"]
    assert last.equal(read_artifact(plain / "prompts.safetensors").tensors["text_prompts"])  # val passes drew nothing
    assert sorted(p.name for p in (kept / "epochs").glob("prompts-*")) == ["prompts-epoch3.safetensors",
                                                                            "prompts-epoch4.safetensors"]


def test_best_val_without_validation_images_is_one_line(tmp_path, model, capsys):
    from helpers import make_image_folder, train_args

    folder = make_image_folder(tmp_path / "data", ["ant", "bee"], {"train": 2, "test": 1})
    assert main(train_args("coop", folder, tmp_path / "run", model, "final_model=best_val", extra=("--shots", "0"))) == 2
    assert "has no validation images; expected final_model last" in capsys.readouterr().err


def test_report_paper_puts_the_published_numbers_beside_the_measured_ones(tmp_path, capsys):
    from metaprompt.benchmark import BASE_TO_NEW_DATASETS, PUBLISHED_BASE_TO_NEW, PUBLISHED_DG
    from metaprompt.results import build_report

    results = [b2n_result(1, 80.0, 60.0, dataset=d) for d in BASE_TO_NEW_DATASETS]
    results += [b2n_result(1, 70.0, 70.0, dataset="dtd", name="metaprompt")]  # 1 of the 11 datasets
    results += [{"protocol": "dg", "name": "metaprompt", "method": "metaprompt", "dataset": "pacs", "target": t,
                 "seed": 1, "shots": 1, "metrics": {"accuracy": 95.0}}
                for t in ("art_painting", "cartoon", "photo", "sketch")]
    b2n, dg = build_report(results, paper=True).tables[-2:]
    rows = dict(b2n.rows)
    paper_base, paper_new, paper_hm = PUBLISHED_BASE_TO_NEW["coop"]
    base, base_measured, base_delta = rows["coop"][:3]
    assert (base.mean, base_measured.mean, base_delta.mean) == pytest.approx((paper_base, 80.0, 80.0 - paper_base))
    hm_delta = rows["coop"][8]
    assert hm_delta.mean == pytest.approx(2 * 80 * 60 / 140 - paper_hm)
    assert rows["metaprompt"][1].covers == (1, 11)  # an average over one dataset of the paper's 11: said so
    assert "Zhao et al." in b2n.note and "(k/n)" in b2n.note
    pacs = dict(dg.rows)["metaprompt 1-shot"][:3]
    assert [c.mean for c in pacs] == pytest.approx([PUBLISHED_DG[("metaprompt", 1)]["pacs"], 95.0,
                                                    95.0 - PUBLISHED_DG[("metaprompt", 1)]["pacs"]])
    kgcoop = build_report([b2n_result(1, 80.0, 70.0, dataset="dtd", name="kgcoop", method="kgcoop")],
                          paper=True).tables[-1]
    assert dict(kgcoop.rows)["kgcoop"][0].mean == 80.73  # the KgCoOp README's average, named as the source
    assert "kgcoop: Yao et al., KgCoOp, CVPR 2023" in kgcoop.note and "Zhao et al." not in kgcoop.note
    for seed_dir in ("a", "b"):
        (tmp_path / seed_dir).mkdir()
    (tmp_path / "a" / "result.json").write_text(json.dumps(results[0]))
    assert main(["report", str(tmp_path), "--paper", "--figure", str(tmp_path / "f.png")]) == 0
    assert "### Base-to-new, average over the 11 datasets: published vs measured" in capsys.readouterr().out
