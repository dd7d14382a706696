"""Few-shot sampling, its relative-path cache, base/new class halves and leave-one-domain-out tasks."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from data_layouts import make_coop_dataset, make_domainnet, make_office_home, make_pacs, make_vlcs, make_world
from metaprompt.data import Datum, DatasetSplits, build_dataset
from metaprompt.data.fewshot import (dg_source_test, dg_task, draw_record, few_shot, fewshot_splits, shortfall_summary,
                                     shortfalls, subsample_classes)
from metaprompt.tasks import TaskSpec, build_task
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


# ---------------------------------------------------------------- few_shot (tests/test_parity_data.py checks the
# draws against Dassl's generate_fewshot_dataset and the released DG readers themselves)

def test_few_shot_draws_k_per_class_deterministically():
    items = _items({0: 10, 1: 7, 2: 9})
    first = few_shot(items, 4, seed=1)
    assert Counter(d.label for d in first) == {0: 4, 1: 4, 2: 4}
    assert _paths(first) == _paths(few_shot(items, 4, seed=1))
    assert _paths(first) != _paths(few_shot(items, 4, seed=2))
    assert len(set(_paths(first))) == 12


def test_few_shot_samples_the_split_in_its_own_order():
    """As Dassl: classes in the order they first appear, each sampled from its items in split order, so a
    reordered split (another listing of the same files) can give other images for the same seed."""
    items = _items({0: 10, 1: 10})
    drawn = few_shot(items, 3, seed=1)
    assert [d.label for d in drawn] == [0] * 3 + [1] * 3
    interleaved = [d for pair in zip(items[:10], items[10:]) for d in pair][::-1]  # label 1 first
    assert [d.label for d in few_shot(interleaved, 3, seed=1)] == [1] * 3 + [0] * 3


def test_few_shot_per_domain_draws_k_per_class_and_domain_domains_first():
    items = _items({0: 5, 1: 5}, "sketch") + _items({0: 5, 1: 5}, "photo")
    drawn = few_shot(items, 2, seed=3, per_domain=True)
    assert [(d.domain, d.label) for d in drawn] == [("sketch", 0)] * 2 + [("sketch", 1)] * 2 + \
        [("photo", 0)] * 2 + [("photo", 1)] * 2


def test_a_class_with_fewer_images_than_the_shots_gives_all_of_them_without_drawing():
    """Dassl takes the whole group and draws no random number for it: the classes after it are drawn as if
    the short class were not there."""
    items = _items({0: 5, 1: 2, 2: 5})
    drawn = few_shot(items, 3, seed=1)
    assert Counter(d.label for d in drawn) == {0: 3, 1: 2, 2: 3}
    without_short = few_shot(_items({0: 5, 2: 5}), 3, seed=1)
    assert _paths([d for d in drawn if d.label != 1]) == _paths(without_short)


# ---------------------------------------------------------------- fewshot_splits and its record

def test_fewshot_splits_caps_val_at_four_shots():
    splits = _splits(train=20, val=6)
    out = fewshot_splits(splits, 16, seed=1)
    assert Counter(d.label for d in out.train) == dict.fromkeys(range(5), 16)
    assert Counter(d.label for d in out.val) == dict.fromkeys(range(5), 4)
    assert all("/val/" in d.impath for d in out.val)
    assert out.test == splits.test and out.classnames == splits.classnames
    assert out.fewshot.shots == 16 and out.fewshot.seed == 1 and shortfalls(out) == []


def test_fewshot_splits_draws_val_from_train_when_there_is_no_val():
    out = fewshot_splits(_splits(val=0), 2, seed=1)
    assert len(out.val) == 10 and all("/train/" in d.impath for d in out.val)


def test_fewshot_splits_keeps_val_whole_when_it_is_the_test_set():
    splits = replace(_splits(), draw_val=False)
    assert fewshot_splits(splits, 1, seed=1).val == splits.val


def test_fewshot_splits_refuses_test_only_dataset():
    with pytest.raises(MetapromptError, match="test-only"):
        fewshot_splits(_splits(train=0), 1, seed=1)


def test_shortfalls_name_each_short_class_and_how_short():
    task = subsample_classes(fewshot_splits(_splits(n_classes=4, train=3), 5, seed=1), "base")
    assert [(s.classname, s.images, s.shots) for s in shortfalls(task)] == [("class 0", 3, 5), ("class 1", 3, 5)]
    assert shortfall_summary(task) == {"classes": 2, "missing_images": 4}


def test_the_record_holds_relative_paths_and_rebuilds_the_task_after_the_root_moves(tmp_path):
    old_root = tmp_path / "old"
    make_coop_dataset(old_root, "eurosat")
    spec = TaskSpec("eurosat", str(old_root), classes="base")
    first = build_task(spec, shots=2, seed=1)
    record = json.loads(json.dumps(draw_record(first)))
    assert record["dataset"] == "eurosat" and len(record["train"]) == 4 and len(record["val"]) == 4  # base: 2 classes
    assert all(not Path(p).is_absolute() and str(tmp_path) not in p for p in record["train"] + record["val"])

    new_root = tmp_path / "moved"
    shutil.move(old_root, new_root)
    again = build_task(replace(spec, root=str(new_root)), shots=2, seed=99, recorded=record)  # the record, not the seed
    assert [p.replace(str(new_root), str(old_root)) for p in _paths(again.train)] == _paths(first.train)
    assert again.classnames == first.classnames and [d.label for d in again.train] == [d.label for d in first.train]


def test_a_stale_record_is_reported(tmp_path):
    make_coop_dataset(tmp_path, "dtd")
    record = {"dataset": "dtd", "shots": 1, "seed": 1, "train": ["banded/nope.jpg"], "val": []}
    with pytest.raises(MetapromptError, match=r"fewshot\.json: lists 'banded/nope\.jpg' in train.*data changed"):
        build_task(TaskSpec("dtd", str(tmp_path)), shots=1, recorded=record, source="run/fewshot.json")


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
    ("vlcs", make_vlcs, "sun", 10),
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


def test_dg_task_domainnet_draws_val_from_the_sources_test_lists_as_released(tmp_path):
    make_domainnet(tmp_path)
    task = dg_task(build_dataset("domainnet", tmp_path), "real", shots=2, seed=4)
    assert all(d.impath.endswith("_000002.jpg") or "painting_002_000001" in d.impath for d in task.val)
    assert Counter(d.domain for d in task.val) == dict.fromkeys(task.domains, 3)


def test_dg_task_records_the_short_class_of_one_source_domain(tmp_path):
    make_domainnet(tmp_path)
    task = dg_task(build_dataset("domainnet", tmp_path), "real", shots=2, seed=4)
    assert [(s.classname, s.domain, s.images) for s in shortfalls(task)] == [("alarm_clock", "painting", 1)]
    record = draw_record(task)
    assert record["per_domain"] and record["shortfall"] == [
        {"class": "alarm_clock", "domain": "painting", "images": 1, "shots": 2}]
    again = build_task(TaskSpec("domainnet", str(tmp_path), target="real"), shots=2, seed=4, recorded=record)
    assert _paths(again.train) == _paths(task.train) and again.domains == task.domains


def test_dg_task_unknown_target_lists_domains(tmp_path):
    make_vlcs(tmp_path)
    expected = "unknown target domain 'voc'; expected one of: caltech, labelme, pascal, sun"
    with pytest.raises(MetapromptError, match=expected):
        dg_task(build_dataset("vlcs", tmp_path), "voc", shots=1, seed=1)


def test_imagenet_records_no_val_draw_and_keeps_its_test_set_as_val(tmp_path):
    from data_layouts import make_imagenet

    make_imagenet(tmp_path)
    spec = TaskSpec("imagenet", str(tmp_path))
    task = build_task(spec, shots=2, seed=1)
    record = draw_record(task)
    assert record["val"] is None and len(record["train"]) == 6
    again = build_task(spec, shots=2, seed=1, recorded=record)
    assert again.val == again.test == task.test and _paths(again.train) == _paths(task.train)
