"""A plain image folder: ``root/<split>/<class>/*.{png,jpg,...}``, split in train / val / test."""
from __future__ import annotations

from pathlib import Path

from ..errors import MetapromptError
from .base import Datum, DatasetSplits
from .layout import IMAGE_SUFFIXES, SPLITS, absolute, image_files, subfolders
from .registry import register


@register("imagefolder")
def read_image_folder(root: str | Path, name: str = "imagefolder") -> DatasetSplits:
    """Read ``root/<split>/<class>/`` folders. Class names are the folder names (prompts spell ``_`` as a space);
    labels follow the sorted folder names of the train split (or of the first split present)."""
    root = Path(root)
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise MetapromptError(
            f"{root}: expected an image folder with subfolders {', '.join(SPLITS)} "
            "(each holding one folder per class), found none")
    class_dirs = [p.name for p in subfolders(root / present[0], "one folder per class")]
    label_of = {c: i for i, c in enumerate(class_dirs)}
    classnames = list(class_dirs)
    splits: dict[str, list[Datum]] = {s: [] for s in SPLITS}
    for split in present:
        for cdir in subfolders(root / split, "one folder per class"):
            if cdir.name not in label_of:
                raise MetapromptError(
                    f"{cdir}: class folder not present in {root / present[0]} "
                    f"(expected one of {', '.join(class_dirs)})")
            label = label_of[cdir.name]
            splits[split] += [Datum(str(absolute(p)), label, classnames[label]) for p in image_files(cdir)]
    if not splits["train"] and not splits["test"]:
        raise MetapromptError(f"{root}: no images found under {', '.join(present)} (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return DatasetSplits.from_splits(name, classnames, splits, template="default")
