"""Few-shot sampling, its relative-path cache, base/new class halves and leave-one-domain-out tasks."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from data_layouts import make_coop_dataset, make_domainnet, make_office_home, make_pacs, make_vlcs, make_world
from metaprompt.data import Datum, DatasetSplits, build_dataset
from metaprompt.data.fewshot import dg_source_test, dg_task, few_shot, fewshot_splits, subsample_classes
from metaprompt.errors import MetapromptError


def _items(per_class: dict[int, int], domain: str = "", split: str = "train") -> list[Datum]:
    return [Datum(f"/data/toy/{domain or 'all'}/{split}/c{label}/{i}.png", label, f"class {label}", domain)
            for label, count in per_class.items() for i in range(count)]


def _splits(n_classes: int = 5, train: int = 6, val: int = 2, test: int = 3) -> DatasetSplits:
    labels = range(n_classes)
    return DatasetSplits(name="toy", classnames=[f"class {i}" for i in labels],
                         train=_items(dict.fromkeys(labels, train)),
                         val=_items(dict.fromkeys(labels, val), split="val"),
                         test=_items(dict.fromkeys(labels, test), split="test"))


def _paths(items: list[Datum]) -> list[str]:
    return [d.impath for d in items]


# ---------------------------------------------------------------- few_shot

def test_few_shot_draws_k_per_class_deterministically():
    items = _items({0: 10, 1: 7, 2: 9})
    first = few_shot(items, 4, seed=1)
    assert Counter(d.label for d in first) == {0: 4, 1: 4, 2: 4}
    assert _paths(first) == _paths(few_shot(list(reversed(items)), 4, seed=1))
    assert _paths(first) != _paths(few_shot(items, 4, seed=2))
    assert len(set(_paths(first))) == 12


def test_few_shot_per_domain_draws_k_per_class_and_domain():
    items = _items({0: 5, 1: 5}, "photo") + _items({0: 5, 1: 5}, "sketch")
    drawn = few_shot(items, 2, seed=3, per_domain=True)
    expected = {(domain, label): 2 for domain in ("photo", "sketch") for label in (0, 1)}
    assert Counter((d.domain, d.label) for d in drawn) == expected


def test_few_shot_names_the_class_too_small():
    items = _items({0: 5, 1: 2, 2: 5})
    with pytest.raises(MetapromptError, match=r"class 'class 1' \(label 1\) has only 2 image"):
        few_shot(items, 3, seed=1)
    domains = _items({0: 5}, "photo") + _items({0: 1}, "sketch")
    with pytest.raises(MetapromptError, match=r"per domain: class 'class 0' \(label 0\) in domain 'sketch' has only 1"):
        few_shot(domains, 2, seed=1, per_domain=True)


# ---------------------------------------------------------------- fewshot_splits and its cache

def test_fewshot_splits_caps_val_at_four_shots():
    splits = _splits(train=20, val=6)
    out = fewshot_splits(splits, 16, seed=1)
    assert Counter(d.label for d in out.train) == dict.fromkeys(range(5), 16)
    assert Counter(d.label for d in out.val) == dict.fromkeys(range(5), 4)
    assert all("/val/" in d.impath for d in out.val)
    assert out.test == splits.test and out.classnames == splits.classnames


def test_fewshot_splits_draws_val_from_train_when_there_is_no_val():
    out = fewshot_splits(_splits(val=0), 2, seed=1)
    assert len(out.val) == 10 and all("/train/" in d.impath for d in out.val)


def test_fewshot_splits_refuses_test_only_dataset():
    with pytest.raises(MetapromptError, match="test-only"):
        fewshot_splits(_splits(train=0), 1, seed=1)


def test_cache_holds_relative_paths_and_survives_moving_the_root(tmp_path):
    old_root = tmp_path / "old"
    make_coop_dataset(old_root, "eurosat")
    cache_dir = old_root / "eurosat" / "split_fewshot"
    first = fewshot_splits(build_dataset("eurosat", old_root), 2, seed=1, cache_dir=cache_dir)
    cache_file = cache_dir / "shot_2-seed_1.json"
    cached = json.loads(cache_file.read_text())
    assert cached["dataset"] == "eurosat" and len(cached["train"]) == 6 and len(cached["val"]) == 6
    assert all(not Path(p).is_absolute() and str(tmp_path) not in p for p in cached["train"] + cached["val"])

    new_root = tmp_path / "moved"
    shutil.move(old_root, new_root)
    new_cache = new_root / "eurosat" / "split_fewshot"
    again = fewshot_splits(build_dataset("eurosat", new_root), 2, seed=1, cache_dir=new_cache)
    assert [p.replace(str(new_root), str(old_root)) for p in _paths(again.train)] == _paths(first.train)
    assert all(Path(p).is_file() for p in _paths(again.train) + _paths(again.val))


def test_cache_is_reused_rather_than_redrawn(tmp_path):
    make_coop_dataset(tmp_path, "dtd")
    splits = build_dataset("dtd", tmp_path)
    cache_dir = tmp_path / "cache"
    fewshot_splits(splits, 1, seed=5, cache_dir=cache_dir)
    cache_file = cache_dir / "shot_1-seed_5.json"
    planted = json.loads(cache_file.read_text())
    planted["train"] = ["banded/banded_0003.jpg"]  # a valid image the draw did not necessarily pick
    cache_file.write_text(json.dumps(planted))
    reused = fewshot_splits(splits, 1, seed=5, cache_dir=cache_dir)
    assert [Path(p).name for p in _paths(reused.train)] == ["banded_0003.jpg"]


def test_stale_cache_is_reported(tmp_path):
    make_coop_dataset(tmp_path, "dtd")
    splits = build_dataset("dtd", tmp_path)
    cache_file = tmp_path / "cache" / "shot_1-seed_1.json"
    cache_file.parent.mkdir()
    cache_file.write_text(json.dumps({"dataset": "dtd", "train": ["banded/nope.jpg"], "val": []}))
    with pytest.raises(MetapromptError, match=r"shot_1-seed_1\.json: lists 'banded/nope\.jpg' in train.*stale"):
        fewshot_splits(splits, 1, seed=1, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- base / new

def test_subsample_classes_splits_and_relabels():
    splits = _splits(n_classes=5)
    base, new = subsample_classes(splits, "base"), subsample_classes(splits, "new")
    assert base.classnames == ["class 0", "class 1", "class 2"] and new.classnames == ["class 3", "class 4"]
    for part, offset in ((base, 0), (new, 3)):
        for items in (part.train, part.val, part.test):
            assert {d.label for d in items} == set(range(len(part.classnames)))
            assert all(d.classname == f"class {d.label + offset}" for d in items)
    assert len(base.test) == 9 and len(new.test) == 6
    assert subsample_classes(splits, "all") is splits
    with pytest.raises(MetapromptError, match="expected one of: base, new, all"):
        subsample_classes(splits, "novel")


# ---------------------------------------------------------------- leave-one-domain-out

def _test_domains(task: DatasetSplits) -> set[str]:
    return {d.domain for d in task.test}


def test_dg_task_pacs_tests_on_target_train_and_crossval(tmp_path):
    make_pacs(tmp_path)
    task = dg_task(build_dataset("pacs", tmp_path), "photo", shots=1, seed=1)
    assert task.domains == ["art_painting", "cartoon", "sketch"]
    assert _test_domains(task) == {"photo"} and len(task.test) == 9
    assert Counter((d.domain, d.label) for d in task.train) == {(s, c): 1 for s in task.domains for c in range(3)}
    assert all("/pic_002" in d.impath for d in task.val)  # the crossval images
    assert Counter(d.domain for d in task.val) == dict.fromkeys(task.domains, 3)


def test_dg_source_test_holds_the_sources_protocol_images_less_the_shots(tmp_path):
    make_pacs(tmp_path)
    splits = build_dataset("pacs", tmp_path)
    task = dg_task(splits, "photo", shots=1, seed=1)
    source = dg_source_test(task, splits)
    expected = {d.impath for d in splits.train + splits.val if d.domain != "photo"} - {d.impath for d in task.train}
    assert {d.impath for d in source.test} == expected and len(source.test) == 3 * (9 - 3)
    assert source.train == task.train and source.domains == task.domains


def test_dg_task_office_home_tests_on_all_of_target(tmp_path):
    make_office_home(tmp_path)
    task = dg_task(build_dataset("office_home", tmp_path), "clipart", shots=1, seed=1)
    assert _test_domains(task) == {"clipart"} and len(task.test) == 9
    assert len(task.train) == 3 * 3 and "clipart" not in {d.domain for d in task.train}


@pytest.mark.parametrize("name,make,target,test_size", [
    ("vlcs", make_vlcs, "sun", 6),
    ("domainnet", make_domainnet, "quickdraw", 3),
    ("world_dg", make_world, "sketch", 8),
])
def test_dg_task_tests_on_target_test_split(tmp_path, name, make, target, test_size):
    make(tmp_path)
    splits = build_dataset(name, tmp_path)
    task = dg_task(splits, target, shots=1, seed=1)
    assert task.test == [d for d in splits.test if d.domain == target] and len(task.test) == test_size
    assert task.domains == [d for d in splits.domains if d != target]
    assert Counter(d.domain for d in task.val) == dict.fromkeys(task.domains, len(splits.classnames))


def test_dg_task_caches_per_target(tmp_path):
    make_domainnet(tmp_path)
    splits = build_dataset("domainnet", tmp_path)
    first = dg_task(splits, "real", shots=2, seed=4, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "shot_2-seed_4-target_real.json").is_file()
    assert _paths(dg_task(splits, "real", shots=2, seed=4, cache_dir=tmp_path / "cache").train) == _paths(first.train)


def test_dg_task_unknown_target_lists_domains(tmp_path):
    make_vlcs(tmp_path)
    expected = "unknown target domain 'voc'; expected one of: caltech, labelme, pascal, sun"
    with pytest.raises(MetapromptError, match=expected):
        dg_task(build_dataset("vlcs", tmp_path), "voc", shots=1, seed=1)
