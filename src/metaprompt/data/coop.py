"""CoOp's base-to-new layouts: one folder per dataset holding images and a ``split_zhou_*.json`` file
(``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``), plus FGVC-Aircraft,
which CoOp reads from the dataset's own ``images_variant_*.txt`` lists. The offline world's
base-to-new split (``world/split_zhou_World.json``) is read by the same JSON reader.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import MetapromptError
from .base import Datum, DatasetSplits
from .layout import (SPLITS, classnames_of, dataset_folder, existing_image, malformed, numbered_lines, require_dir,
                     require_file, require_items, utf8)
from .registry import register

JSON_FORMAT = '{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}'


@dataclass(frozen=True)
class CoopJsonLayout:
    """Where a CoOp-JSON dataset lives: ``<root>/<folder>/<split_file>``, whose paths are relative to
    ``<root>/<folder>/<image_dir>`` (``image_dir`` is empty when they are relative to the folder itself)."""

    name: str
    folder: str
    image_dir: str
    split_file: str
    preparable: bool = True
    """``metaprompt data prepare`` can make its split file with CoOp's recipe (see :mod:`metaprompt.data.prepare`)."""

    def describe(self) -> str:
        images = f"{self.image_dir}/ and " if self.image_dir else ""
        return f"{images}{self.split_file}"


COOP_JSON_LAYOUTS = (
    CoopJsonLayout("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    CoopJsonLayout("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    CoopJsonLayout("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
    CoopJsonLayout("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    CoopJsonLayout("food101", "food-101", "images", "split_zhou_Food101.json"),
    CoopJsonLayout("sun397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    CoopJsonLayout("dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
    CoopJsonLayout("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json"),
    CoopJsonLayout("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", preparable=False),
    CoopJsonLayout("world", "world", "", "split_zhou_World.json", preparable=False),
)
LAYOUT_BY_NAME = {layout.name: layout for layout in COOP_JSON_LAYOUTS}


def read_coop_json(root: str | Path, layout: CoopJsonLayout) -> DatasetSplits:
    """Read a dataset laid out as CoOp's ``split_zhou_*.json`` describes it. Class names are the JSON's
    own (underscores kept: replacing them is the prompt side's job)."""
    folder = dataset_folder(root, layout.folder, layout.describe())
    split_path = require_file(folder / layout.split_file, f"CoOp's split file {JSON_FORMAT}, {_split_file_source(layout)}")
    image_dir = require_dir(folder / layout.image_dir, f"the images named by {layout.split_file}")
    entries = _load_split_json(split_path)
    splits = {key: require_items(_json_items(entries[key], key, image_dir, split_path), split_path, repr(key))
              for key in SPLITS}
    classnames = classnames_of((d for key in SPLITS for d in splits[key]), split_path)
    return DatasetSplits.from_splits(layout.name, classnames, splits)


def _split_file_source(layout: CoopJsonLayout) -> str:
    """Where a missing split file comes from."""
    text = "linked from CoOp's DATASETS.md"
    if layout.preparable:
        text += f"; or `metaprompt data prepare {layout.name} --root <data root>` makes one with CoOp's recipe"
    return text


def _load_split_json(path: Path) -> dict:
    try:
        data = json.loads(utf8(path.read_bytes(), path))
    except json.JSONDecodeError as err:
        raise MetapromptError(f"{path}: not valid JSON ({err}); expected {JSON_FORMAT}") from None
    if not isinstance(data, dict) or any(not isinstance(data.get(key), list) for key in SPLITS):
        found = f"keys {sorted(data)}" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise MetapromptError(f"{path}: expected {JSON_FORMAT}, found {found}")
    return data


def _json_items(entries: list, key: str, image_dir: Path, source: Path) -> list[Datum]:
    items = []
    for index, entry in enumerate(entries, start=1):
        where = f"{key!r} entry {index}"
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and isinstance(entry[2], str)):
            raise MetapromptError(f"{source}: {where} is {entry!r}; expected [relpath, label, classname]")
        relpath, label, classname = entry
        items.append(Datum(existing_image(image_dir, relpath, source, where), label, classname))
    return items


for _layout in COOP_JSON_LAYOUTS:
    register(_layout.name, _layout.folder)(partial(read_coop_json, layout=_layout))

FGVC_FOLDER = "fgvc_aircraft"
FGVC_CLASSES = "variants.txt"
FGVC_LIST = "images_variant_{}.txt"
FGVC_LINE = "'<image id> <variant name>' (e.g. '1025794 707-320')"


@register("fgvc_aircraft", FGVC_FOLDER)
def read_fgvc_aircraft(root: str | Path) -> DatasetSplits:
    """FGVC-Aircraft as CoOp reads it: ``variants.txt`` gives the class order, ``images_variant_{train,
    val,test}.txt`` list ``<image id> <variant>``, images at ``images/<id>.jpg``."""
    folder = dataset_folder(root, FGVC_FOLDER, f"images/, {FGVC_CLASSES} and {FGVC_LIST.format('{train,val,test}')}")
    variants_file = folder / FGVC_CLASSES
    classnames = [line for _, line in numbered_lines(variants_file, "one variant name per line")]
    if not classnames:
        raise MetapromptError(f"{variants_file}: no variant names found (expected one per line)")
    repeated = sorted({name for name in classnames if classnames.count(name) > 1})
    if repeated:
        raise MetapromptError(f"{variants_file}: {', '.join(map(repr, repeated))} listed more than once (expected "
                              "each variant once)")
    label_of = {name: label for label, name in enumerate(classnames)}
    image_dir = require_dir(folder / "images", "the aircraft images <id>.jpg")
    splits = {}
    for key in SPLITS:
        list_file = folder / FGVC_LIST.format(key)
        splits[key] = require_items(_fgvc_items(list_file, image_dir, label_of), list_file, key)
    return DatasetSplits.from_splits("fgvc_aircraft", classnames, splits)


def _fgvc_items(list_file: Path, image_dir: Path, label_of: dict[str, int]) -> list[Datum]:
    items = []
    for number, line in numbered_lines(list_file, f"lines {FGVC_LINE}"):
        image_id, _, variant = line.partition(" ")
        if variant not in label_of:
            raise malformed(list_file, number, line, f"{FGVC_LINE} with a variant listed in {FGVC_CLASSES}")
        impath = existing_image(image_dir, f"{image_id}.jpg", list_file, f"line {number}")
        items.append(Datum(impath, label_of[variant], variant))
    return items
