"""Your own data from a descriptor file (issue 21, item 4): a named dataset, with or without domains, that every
protocol accepts, `data check` covers, folders, records and tables name; a bad descriptor is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from data_layouts import OWN_CLASSES, OWN_DOMAINS, make_own_dataset, write_image
from metaprompt.cli import main
from metaprompt.data.descriptor import load_descriptor, read_descriptor
from metaprompt.data.registry import build_dataset

SHORT = ["--model", "world-tiny", "--set", "max_steps=1", "--no-progress", "--workers", "0"]


def write_descriptor(folder: Path, file: str = "shapes.yaml", **fields) -> Path:
    path = folder / file
    path.write_text(yaml.safe_dump({"name": "shapes", "root": "shapes", "classnames": list(OWN_CLASSES),
                                    "domains": list(OWN_DOMAINS),
                                    "splits": {"train": "train", "val": "val", "test": "test"}, **fields}))
    return path


@pytest.fixture
def own(tmp_path) -> Path:
    """A researcher's folder: their images (two domains) and the descriptor beside them."""
    make_own_dataset(tmp_path)
    return write_descriptor(tmp_path)


def test_a_dataset_with_domains_runs_dg_and_is_named_in_folders_records_and_tables(own, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["data", "check", "--dataset", str(own)]) == 0
    checked = capsys.readouterr().out
    assert checked.startswith("shapes") and "found" in checked and "3 classes; train 12, val 6, test 12" in checked
    assert "domains photo, sketch" in checked
    assert main(["run", "dg", "--method", "coop", "--dataset", str(own), "--shots", "1", "--seeds", "1",
                 "--out", str(out), *SHORT]) == 0
    for target in OWN_DOMAINS:
        result = json.loads((out / "dg" / "coop" / "shapes" / "shots1" / target / "seed1" / "result.json").read_text())
        assert result["dataset"] == "shapes" and result["target"] == target
        assert result["environment"]["dataset_descriptors"]["shapes"]["descriptor"] == str(own)
        assert result["settings"]["dataset.domains"] == list(OWN_DOMAINS)
        log = (out / "dg" / "coop" / "shapes" / "shots1" / target / "seed1" / "log.txt").read_text()
        assert f"dataset shapes: descriptor {own} (sha256 " in log
    capsys.readouterr()
    assert main(["report", str(out), "--figure", str(tmp_path / "f.png")]) == 0
    report = capsys.readouterr().out
    assert "### Domain generalisation: shapes" in report and "| photo |" in report and "| sketch |" in report


def test_without_domains_it_runs_base_to_new_and_train_eval_by_its_name(tmp_path, capsys):
    make_own_dataset(tmp_path)
    own = write_descriptor(tmp_path, "photos.yaml", name="photos", root="shapes/photo", domains=[])
    out = tmp_path / "results"
    assert main(["run", "base2new", "--method", "coop", "--datasets", str(own), "--seeds", "1",
                 "--out", str(out), *SHORT]) == 0
    result = json.loads((out / "base2new" / "coop" / "photos" / "seed1" / "result.json").read_text())
    assert result["dataset"] == "photos" and set(result["metrics"]) == {"base", "new", "hm"}
    capsys.readouterr()
    assert main(["report", str(out), "--figure", str(tmp_path / "f.png")]) == 0
    assert "| photos |" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--method", "coop", "--dataset", str(own), "--classes", "base", "--out", str(run), *SHORT]) == 0
    assert main(["eval", "--prompts", str(run / "prompts.safetensors"), "--dataset", str(own), "--classes", "new",
                 "--no-progress", "--workers", "0"]) == 0
    assert "new classes of photos test" in capsys.readouterr().out


def test_list_files_read_the_same_items_as_the_built_in_reader(world_root, tmp_path):
    """The world's own DG layout (``splits/<domain>_<split>.txt``) described by a descriptor reads item for item
    what the built-in world_dg reader reads."""
    builtin = build_dataset("world_dg", world_root)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump({
        "name": "my_world", "root": str(world_root / "world"), "classnames": builtin.classnames,
        "domains": builtin.domains, "splits": {"train": "splits/{domain}_train.txt", "test": "splits/{domain}_test.txt"}}))
    own = read_descriptor(load_descriptor(path))
    assert own.name == "my_world" and own.domains == builtin.domains and own.classnames == builtin.classnames
    assert own.train == builtin.train and own.test == builtin.test and own.val == []


def test_a_changed_descriptor_does_not_pass_for_the_runs_it_made(own, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["run", "dg", "--method", "coop", "--dataset", str(own), "--shots", "1", "--seeds", "1",
            "--targets", "photo", "--out", str(out), *SHORT]
    assert main(argv) == 0
    write_image(tmp_path / "shapes" / "photo" / "train" / "oval" / "0.jpg")
    write_descriptor(tmp_path, classnames=[*OWN_CLASSES, "oval"])
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds a run with other settings (dataset.classnames is ['circle', 'square', 'triangle'] there" in \
        capsys.readouterr().err


def test_root_is_required_unless_every_dataset_is_a_descriptor(own, tmp_path, capsys):
    assert main(["run", "base2new", "--method", "coop", "--datasets", str(own), "eurosat", "--out",
                 str(tmp_path / "o"), *SHORT]) == 2
    assert "--root is required" in capsys.readouterr().err
    assert main(["data", "check"]) == 2
    assert "--root is required" in capsys.readouterr().err


def test_two_descriptors_of_one_name_in_a_command_are_refused(own, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    copy = write_descriptor(other, root=str(tmp_path / "shapes"))
    assert main(["data", "check", "--dataset", str(own), str(copy)]) == 2
    assert f"two descriptor files name the dataset 'shapes' ({own}, {copy})" in capsys.readouterr().err


BAD = [
    ({"colour": "red"}, "unknown key 'colour'; a dataset descriptor takes name, root, classnames"),
    ({"name": "my/shapes"}, "name 'my/shapes' is not a usable name"),
    ({"name": "pacs"}, "name 'pacs' is a built-in or installed dataset's"),
    ({"domains": ["photo"]}, "domains lists one domain (photo); expected two or more (or none)"),
    ({"domains": ["photo", "photo"]}, "domains repeats photo"),
    ({"classnames": ["circle", "circle"]}, "classnames repeats circle"),
    ({"splits": {"train": "train"}}, "splits needs train and test"),
    ({"splits": {"train": "train", "test": "test", "holdout": "x"}}, "splits has holdout; expected train, test"),
    ({"splits": {"train": "../train", "test": "test"}}, "splits.train '../train' leaves root"),
    ({"splits": {"train": "train.txt", "test": "test"}}, "splits.train 'train.txt': expected one list per domain: put {domain}"),
    ({"classnames": [], "splits": {"train": "{domain}.txt", "test": "test"}}, "splits given as list files need classnames"),
    ({"root": "nowhere"}, "is not a folder (expected the dataset's images)"),
    ({"domains": [], "splits": {"train": "photo", "test": "photo/."}}, "splits.train and splits.test are both"),
    ({"classnames": ["circle", "square"]}, "not one of the classes of"),
    ({"first_label": "1"}, "first_label must be a int, got '1'"),
]


@pytest.mark.parametrize("change, expected", BAD, ids=[b[1][:30] for b in BAD])
def test_a_bad_descriptor_is_one_line_naming_the_file(change, expected, tmp_path, capsys):
    make_own_dataset(tmp_path)
    path = write_descriptor(tmp_path, **change)
    assert main(["run", "dg", "--method", "coop", "--dataset", str(path), "--shots", "1", "--seeds", "1",
                 "--out", str(tmp_path / "o"), *SHORT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expected in err, err


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed", "not valid YAML"),
    ("- a list", "expected a mapping with name, root and splits, found list"),
    ("name: shapes\nsplits: {train: train, test: test}\n", "missing root"),
])
def test_a_descriptor_that_is_no_mapping_is_one_line(text, expected, tmp_path, capsys):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    assert main(["data", "check", "--dataset", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_a_list_file_label_out_of_range_names_the_file_and_line(tmp_path, capsys):
    make_own_dataset(tmp_path)
    lists = tmp_path / "shapes" / "lists"
    lists.mkdir()
    for domain in OWN_DOMAINS:
        (lists / f"{domain}_train.txt").write_text(f"{domain}/train/circle/0.jpg 0\n{domain}/train/square/0.jpg 3\n")
    path = write_descriptor(tmp_path, splits={"train": "lists/{domain}_train.txt", "test": "test"})
    assert main(["data", "check", "--dataset", str(path)]) == 1
    out = capsys.readouterr().out
    assert "broken" in out and f"{lists / 'photo_train.txt'}: line 2 has label 3; expected" in out
