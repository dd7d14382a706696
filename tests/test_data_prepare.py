"""``metaprompt data prepare`` on fake torchvision download folders (no network)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter

import pytest

import data_layouts as layouts
from metaprompt import cli
from metaprompt.data import build_dataset
from metaprompt.data.coop import LAYOUT_BY_NAME
from metaprompt.data.prepare import coop_recipe_split, coop_trainval_split
from metaprompt.errors import MetapromptError


def prepare(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["data"])
    code = cli.main(["data", "prepare", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# name -> (fake torchvision download, class names CoOp's conventions give, images per class)
CASES = {
    "eurosat": (layouts.make_tv_eurosat, ["Annual Crop Land", "Forest", "Sea or Lake"], 5),
    "dtd": (layouts.make_tv_dtd, ["banded", "blotchy", "braided"], 5),
    "oxford_flowers": (layouts.make_tv_flowers102,
                       ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], 5),
    "oxford_pets": (layouts.make_tv_oxford_pets, ["abyssinian", "american_bulldog", "bengal"], 5),
    "food101": (layouts.make_tv_food101, ["apple_pie", "baklava", "tacos"], 5),
    "caltech101": (layouts.make_tv_caltech101, ["face", "accordion", "airplane"], 5),
    "sun397": (layouts.make_tv_sun397, ["abbey", "outdoor apartment_building", "shop bakery"], 5),
    "stanford_cars": (layouts.make_tv_stanford_cars,
                      ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan"], 5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepare_builds_coop_layout_and_split(tmp_path, capsys, monkeypatch, name):
    make, classnames, per_class = CASES[name]
    make(tmp_path)
    code, output = prepare([name, "--root", str(tmp_path)], capsys, monkeypatch)
    assert code == 0, output
    assert f"made one with CoOp's recipe: CoOp's {RECIPES[name]}" in output and f"{name}: ready at" in output
    splits = build_dataset(name, tmp_path)
    assert splits.classnames == classnames
    per_split = [Counter(d.label for d in items) for items in (splits.train, splits.val, splits.test)]
    # 50/20/30 of 5: round(2.5), round(1.0), the rest; 80/20 of the 3 official train images: 2, round(0.6); test 2
    assert per_split == [dict.fromkeys(range(3), n) for n in (2, 1, per_class - 3)]
    split = json.loads(next((tmp_path / LAYOUT_BY_NAME[name].folder).glob("split_zhou_*.json")).read_text())
    assert split["recipe"].startswith(f"CoOp's {RECIPES[name]}")


RECIPES = {name: "OxfordPets.split_trainval" if name in ("oxford_pets", "stanford_cars", "sun397")
           else "DTD.read_and_split_data" for name in CASES}


@pytest.mark.parametrize("name, official_test", [
    ("oxford_pets", lambda tv: {f"{line.split()[0]}.jpg" for line in (tv / "annotations/test.txt").read_text().split("\n") if line}),
    ("sun397", lambda tv: {line.strip("/") for line in (tv / "Testing_01.txt").read_text().split("\n") if line}),
    ("stanford_cars", lambda tv: {f"cars_test/{p.name}" for p in (tv / "cars_test").iterdir()}),
])
def test_datasets_with_an_official_test_set_keep_it(tmp_path, capsys, monkeypatch, name, official_test):
    tv_folder = CASES[name][0](tmp_path)
    prepare([name, "--root", str(tmp_path)], capsys, monkeypatch)
    splits = build_dataset(name, tmp_path)
    image_dir = tmp_path / LAYOUT_BY_NAME[name].folder / LAYOUT_BY_NAME[name].image_dir
    assert {os.path.relpath(d.impath, image_dir) for d in splits.test} == official_test(tv_folder)


def test_sun397_without_its_partition_files_says_where_they_come_from(tmp_path, capsys, monkeypatch):
    layouts.make_tv_sun397(tmp_path, partitions=False)
    code, output = prepare(["sun397", "--root", str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and "Training_01.txt: not found" in output and "Partitions.zip" in output


def test_prepare_links_instead_of_copying_and_survives_moving_root(tmp_path, capsys, monkeypatch):
    layouts.make_tv_dtd(tmp_path / "a")
    prepare(["dtd", "--root", str(tmp_path / "a")], capsys, monkeypatch)
    assert (tmp_path / "a" / "dtd" / "images").is_symlink()
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert len(build_dataset("dtd", tmp_path / "b").train) == 6


def test_prepare_is_deterministic_and_keeps_an_existing_split(tmp_path, capsys, monkeypatch):
    layouts.make_tv_eurosat(tmp_path, per_class=10)
    prepare(["eurosat", "--root", str(tmp_path), "--seed", "3"], capsys, monkeypatch)
    split_file = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    first = split_file.read_text()
    code, output = prepare(["eurosat", "--root", str(tmp_path)], capsys, monkeypatch)
    assert code == 0 and "split file present, kept" in output
    assert split_file.read_text() == first
    split_file.unlink()
    prepare(["eurosat", "--root", str(tmp_path), "--seed", "3"], capsys, monkeypatch)
    assert split_file.read_text() == first


def test_prepare_fgvc_aircraft_needs_no_split_file(tmp_path, capsys, monkeypatch):
    layouts.make_tv_fgvc_aircraft(tmp_path)
    code, output = prepare(["fgvc_aircraft", "--root", str(tmp_path)], capsys, monkeypatch)
    assert code == 0 and "recipe" not in output
    assert (tmp_path / "fgvc_aircraft" / "variants.txt").is_symlink()
    assert build_dataset("fgvc_aircraft", tmp_path).classnames == list(layouts.FGVC_VARIANTS)


def test_prepare_without_files_says_where_they_were_expected(tmp_path, capsys, monkeypatch):
    code, output = prepare(["dtd", "--root", str(tmp_path)], capsys, monkeypatch)
    assert code == 2
    assert str(tmp_path / "dtd" / "dtd" / "images") in output and "--download" in output


def test_download_calls_torchvision_with_download_true(tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_eurosat(root: str, download: bool):
        calls.append(download)
        layouts.make_tv_eurosat(tmp_path)

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", fake_eurosat)
    code, output = prepare(["eurosat", "--root", str(tmp_path), "--download"], capsys, monkeypatch)
    assert code == 0 and calls == [True]


def test_recipe_split_proportions_and_minimum():
    split = coop_recipe_split([("a", [f"a/{i}.jpg" for i in range(10)])], seed=1)
    assert [len(split[k]) for k in ("train", "val", "test")] == [5, 2, 3]
    assert sorted(p for k in ("train", "val", "test") for p, _, _ in split[k]) == sorted(f"a/{i}.jpg" for i in range(10))
    assert json.dumps(split) == json.dumps(coop_recipe_split([("a", [f"a/{i}.jpg" for i in range(10)])], seed=1))
    with pytest.raises(MetapromptError, match="class 'b' has 3 images"):
        coop_recipe_split([("b", ["1.jpg", "2.jpg", "3.jpg"])], seed=1)


@pytest.mark.parametrize("name", ["oxford_flowers", "stanford_cars"])
def test_prepare_without_scipy_names_the_extra_to_install(tmp_path, capsys, monkeypatch, name):
    """scipy is the optional `prepare` extra: without it, preparing a dataset with MATLAB label files is a
    one-line error naming what to install, before anything is downloaded or linked."""
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    code, output = prepare([name, "--root", str(tmp_path), "--download"], capsys, monkeypatch)
    assert code == 2
    assert "needs scipy, which is not installed: pip install 'metaprompt-vl[prepare]'" in output
    assert list(tmp_path.iterdir()) == []


def test_trainval_split_keeps_the_test_set_and_takes_a_fifth_for_val():
    split = coop_trainval_split([("a", [f"a/{i}.jpg" for i in range(10)])], [("a", ["a/t1.jpg", "a/t2.jpg"])], seed=1)
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 2, 2]
    assert [p for p, _, _ in split["test"]] == ["a/t1.jpg", "a/t2.jpg"]
    with pytest.raises(MetapromptError, match="class 'b' has 2 official train images"):
        coop_trainval_split([("b", ["1.jpg", "2.jpg"])], [("b", [])], seed=1)


def test_the_layouts_that_say_prepare_makes_their_split_file_are_those_it_prepares():
    """The CoOp readers point a missing split file at `data prepare` when their layout says so (they do not
    import prepare); that flag must name exactly the JSON datasets prepare makes split files for."""
    from metaprompt.data.coop import COOP_JSON_LAYOUTS
    from metaprompt.data.prepare import SOURCES

    json_names = {layout.name for layout in COOP_JSON_LAYOUTS}
    assert {layout.name for layout in COOP_JSON_LAYOUTS if layout.preparable} == set(SOURCES) & json_names
    assert set(SOURCES) - json_names == {"fgvc_aircraft"}  # read from its own list files, no split file
