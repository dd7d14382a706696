"""The world's classes and images, and the world written to disk as a dataset.

Classes are ``<colour> <shape>`` (6 x 10 = 60). Folders are ``<colour>_<shape>`` and labels follow
their sorted order, which is colour-major: the base-to-new protocol's base half (the first 30 labels)
is blue, green and orange, its new half purple, red and yellow. New classes share every shape word
with base classes but no colour word.

Every image has its own random generator, seeded by (seed, split, domain, class, index), so an image
is the same whatever order or process renders it, and a world is byte-identical for the same seed.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import MetapromptError
from ..templates import prompt_classnames
from .domains import COLOUR_JITTER, COLOURS, DOMAINS, jittered_colour
from .shapes import SHAPES, place

IMAGE_SIZE = 32
SUPERSAMPLE = 2
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "pretrain": 3}
BASE_TO_NEW_DOMAINS = ("photo",)
MARKER = "world.json"
SPLIT_ZHOU = "split_zhou_World.json"
FORMAT_VERSION = 2
"""2: split_zhou_World.json names classes by their folders (``red_star``), as CoOp's split files do."""

CLASS_FOLDERS: tuple[str, ...] = tuple(sorted(f"{c}_{s}" for c in COLOURS for s in SHAPES))
CLASSNAMES: tuple[str, ...] = tuple(prompt_classnames(CLASS_FOLDERS))
"""The class names as prompts spell them (``red star``); the dataset files name classes by folder."""


def colour_and_shape(label: int) -> tuple[str, str]:
    colour, shape = CLASS_FOLDERS[label].split("_")
    return colour, shape


def image_rng(seed: int, split: str, domain: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], list(DOMAINS).index(domain), label, index])


def render_image(domain: str, label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One ``[size, size, 3]`` uint8 image of class ``label`` in ``domain``, drawn at ``SUPERSAMPLE``
    times the size and shrunk (which anti-aliases it)."""
    colour, shape = colour_and_shape(label)
    canvas = size * SUPERSAMPLE
    radius = rng.uniform(0.27, 0.4) * canvas
    centre = canvas / 2 + rng.uniform(-1, 1, 2) * (canvas / 2 - radius) * 0.6
    contours = place(SHAPES[shape](), tuple(centre), radius, rng.uniform(-0.35, 0.35), bool(rng.uniform() < 0.5))
    hue, sat_val = COLOUR_JITTER[domain]
    painted = DOMAINS[domain](contours, jittered_colour(colour, rng, hue, sat_val), rng, canvas)
    img = Image.fromarray((np.clip(painted, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.BOX))


@dataclass(frozen=True)
class WorldSpec:
    """What a rendered world was made from; written as the marker file, last."""

    seed: int
    train_per_class: int
    val_per_class: int
    test_per_class: int
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class _Item:
    split: str
    domain: str
    label: int
    index: int

    @property
    def relpath(self) -> str:
        return f"{self.domain}/{CLASS_FOLDERS[self.label]}/{self.split}_{self.index:04d}.png"


def _items(spec: WorldSpec, split: str, domains: tuple[str, ...]) -> list[_Item]:
    count = {"train": spec.train_per_class, "val": spec.val_per_class, "test": spec.test_per_class}[split]
    return [_Item(split, d, label, i) for d in domains for label in range(len(CLASS_FOLDERS)) for i in range(count)]


def _write_image(out_dir: Path, seed: int, item: _Item) -> None:
    rng = image_rng(seed, item.split, item.domain, item.label, item.index)
    path = out_dir / item.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_image(item.domain, item.label, rng)).save(path, format="PNG")


def _read_marker(out_dir: Path) -> WorldSpec | None:
    try:
        return WorldSpec(**json.loads((out_dir / MARKER).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _remove_stale(out_dir: Path) -> None:
    """Remove what an earlier (different or interrupted) render of this world left."""
    for name in (MARKER, SPLIT_ZHOU):
        (out_dir / name).unlink(missing_ok=True)
    for name in (*DOMAINS, "splits"):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)


def _zhou_entries(items: list[_Item]) -> list[list]:
    return [[it.relpath, it.label, CLASS_FOLDERS[it.label]] for it in items]


def _write_split_files(out_dir: Path, spec: WorldSpec) -> None:
    (out_dir / "splits").mkdir(exist_ok=True)
    for domain in DOMAINS:
        for split in ("train", "test"):
            lines = [f"{it.relpath} {it.label}\n" for it in _items(spec, split, (domain,))]
            (out_dir / "splits" / f"{domain}_{split}.txt").write_text("".join(lines))
    zhou = {s: _zhou_entries(_items(spec, s, BASE_TO_NEW_DOMAINS)) for s in ("train", "val", "test")}
    (out_dir / SPLIT_ZHOU).write_text(json.dumps(zhou, indent=1))


def _write_images(out_dir: Path, seed: int, items: list[_Item], processes: int, progress: bool) -> None:
    """Render and save ``items``, in ``processes`` processes when more than one (every image has its own
    random generator, so the files are the same either way)."""
    bar = partial(tqdm, total=len(items), desc=f"rendering world to {out_dir}", unit="img", disable=not progress)
    if processes <= 1:
        for item in bar(items):
            _write_image(out_dir, seed, item)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for _ in bar(pool.imap_unordered(partial(_write_image, out_dir, seed), items, chunksize=64)):
            pass


def render_world(out_dir: str | Path, seed: int = 0, train_per_class: int = 32, test_per_class: int = 32,
                 val_per_class: int = 4, progress: bool = True, processes: int = 1) -> Path:
    """Write the world as a dataset under ``out_dir`` and return it.

    Layout: ``<domain>/<class_folder>/<split>_<i>.png`` for the four domains (train and test images
    per class and domain; val images only in the base-to-new domains), ``splits/<domain>_{train,test}.txt``
    (lines ``<relpath> <label>``) for domain generalisation, and ``split_zhou_World.json`` (CoOp's
    format, the base-to-new domains only) for base-to-new. The marker ``world.json`` is written last:
    a world whose marker matches is not rendered again, anything else is removed and rendered anew.
    ``processes`` > 1 renders in that many processes (the same files, sooner on several cores).
    """
    out_dir = Path(out_dir)
    spec = WorldSpec(seed, train_per_class, val_per_class, test_per_class)
    if min(train_per_class, test_per_class) < 1 or val_per_class < 0:
        raise MetapromptError(f"expected at least 1 train and 1 test image per class and val >= 0, got "
                              f"train {train_per_class}, test {test_per_class}, val {val_per_class}")
    if _read_marker(out_dir) == spec:
        return out_dir
    _remove_stale(out_dir)
    items = _items(spec, "train", tuple(DOMAINS)) + _items(spec, "val", BASE_TO_NEW_DOMAINS) \
        + _items(spec, "test", tuple(DOMAINS))
    _write_images(out_dir, seed, items, processes, progress)
    _write_split_files(out_dir, spec)
    (out_dir / MARKER).write_text(json.dumps(asdict(spec), indent=1))
    return out_dir
