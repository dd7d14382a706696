"""Data parity: the few-shot sets this project draws equal those the reference readers draw, image for image
and in order, against tests/goldens/fewshot_draws.json (written by tools/parity/make_goldens.py from CoOp's
reader + Dassl's generate_fewshot_dataset, and the released MetaPrompt DG readers PACSFS, VLCSFS, OfficeHomeFS
and DomainNetFS, on miniature layouts; see tools/parity/fewshot_worker.py).

The layouts are rebuilt here from the golden (empty image files: no reader opens them). VLCS and OfficeHome list
their images in the file system's order (glob's): the golden records the order glob gave each folder where it
was made, and here the readers list in that order (tests/test_data_readers.py checks that our listing is
glob's own order).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import metaprompt.data.layout as layout
from metaprompt.data import build_dataset
from metaprompt.data.fewshot import dg_task, fewshot_splits

DRAWS = json.loads((Path(__file__).parent / "goldens" / "fewshot_draws.json").read_text())
DG_FOLDERS = {"pacs": "pacs", "vlcs": "vlcs", "office_home": "office_home", "domainnet": "domainnet"}
"""The folder names the released MetaPrompt readers use (this project accepts them beside Dassl's)."""


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@pytest.mark.parametrize("seed", sorted(DRAWS["coop"]["draws"]))
def test_coop_json_draws_equal_dassls(tmp_path, seed):
    """A CoOp split file (read as the dtd dataset) whose classes first appear out of label order and one of
    which has fewer images than the shots: train and val shots equal Dassl's for the seed."""
    golden = DRAWS["coop"]
    folder = tmp_path / "dtd"
    for relpath, _, _ in (entry for key in ("train", "val", "test") for entry in golden["split"][key]):
        touch(folder / "images" / relpath)
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(golden["split"]))
    task = fewshot_splits(build_dataset("dtd", tmp_path), golden["shots"], int(seed))

    def relative(items):
        return [os.path.relpath(d.impath, folder / "images") for d in items]

    assert relative(task.train) == golden["draws"][seed]["train"]
    assert relative(task.val) == golden["draws"][seed]["val"]


def lay_out(root: Path, name: str, golden: dict) -> Path:
    folder = root / DG_FOLDERS[name]
    for relpath in golden["files"]:
        touch(folder / relpath)
    for relpath, lines in golden["lists"].items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_text("".join(f"{line}\n" for line in lines))
    return folder


@pytest.mark.parametrize("name", sorted(DRAWS["dg"]))
def test_dg_draws_equal_the_released_readers(tmp_path, monkeypatch, name):
    golden = DRAWS["dg"][name]
    folder = lay_out(tmp_path, name, golden)
    listed = layout.listed

    def listed_as_recorded(path):
        entries = listed(path)
        order = golden["listed"].get(os.path.relpath(path, folder))
        return entries if order is None else sorted(entries, key=lambda e: order.index(e.name))

    monkeypatch.setattr(layout, "listed", listed_as_recorded)
    splits = build_dataset(name, tmp_path)
    for key, draw in golden["draws"].items():
        target, seed = key.split("/")
        task = dg_task(splits, target, golden["shots"], int(seed))
        for split in ("train", "val"):
            ours = [[os.path.relpath(d.impath, folder), d.label, task.domains.index(d.domain), d.classname]
                    for d in getattr(task, split)]
            assert ours == draw[split], f"{name} target {target} seed {seed} {split}"


def test_the_dg_goldens_include_a_class_that_falls_short():
    """The released readers took the single image of a class that has fewer than the shots."""
    draw = DRAWS["dg"]["pacs"]["draws"]["photo/1"]["train"]
    per_group = {}
    for _, label, domain, _ in draw:
        per_group[(domain, label)] = per_group.get((domain, label), 0) + 1
    assert sorted(set(per_group.values())) == [1, DRAWS["dg"]["pacs"]["shots"]]
