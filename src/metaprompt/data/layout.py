"""Helpers every on-disk reader shares: finding the dataset folder, reading list files line by line,
checking that named images exist, and turning labelled items into a class-name list.

Every problem raises :class:`MetapromptError` with a one-line message naming the file or folder, what
was expected and what was found, so that ``metaprompt data check`` can print it as is.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import MetapromptError
from .base import Datum

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
BY_NAME, AS_LISTED = "name", "listed"
"""Orders of a folder's images: sorted by name, or as the file system lists them (``os.listdir``, which is
also ``glob``'s order). The reference readers draw few-shot sets from the listed order for ImageNet, VLCS and
OfficeHome, so the same seed picks the same images on the same disk."""


def absolute(path: str | Path) -> Path:
    """``path`` made absolute without resolving symlinks (a linked image folder keeps its own name)."""
    return Path(os.path.abspath(path))


def dataset_folder(root: str | Path, folder: str | tuple[str, ...], expected: str) -> Path:
    """``root/folder`` (the first of several names that exists), which must exist; ``expected`` describes
    what it should hold."""
    names = (folder,) if isinstance(folder, str) else folder
    for name in names:
        path = absolute(root) / name
        if path.is_dir():
            return path
    alternatives = " or ".join(f"{n}/" for n in names[1:])
    also = f" ({alternatives} also accepted)" if alternatives else ""
    raise MetapromptError(f"{absolute(root) / names[0]}: dataset folder not found{also} (expected {expected})")


def require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise MetapromptError(f"{path}: folder not found (expected {expected})")
    return path


def require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise MetapromptError(f"{path}: file not found (expected {expected})")
    return path


def numbered_lines(path: Path, expected: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of text file ``path``, stripped, with their 1-based line numbers."""
    require_file(path, expected)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = utf8(raw, path, number).strip()
            if line:
                yield number, line


def utf8(data: bytes, path: Path, number: int | None = None) -> str:
    """``data`` (a file's text, or its line ``number``) decoded as UTF-8; bad bytes are an error naming the file,
    the line and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = number if number is not None else data[:err.start].count(b"\n") + 1
        raise MetapromptError(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8 text; expected a "
                              "UTF-8 text file") from None


def malformed(path: Path, number: int, line: str, expected: str) -> MetapromptError:
    return MetapromptError(f"{path}: line {number}: {line!r} is malformed; expected {expected}")


def path_and_label(path: Path, number: int, line: str, expected: str) -> tuple[str, int]:
    """Parse a ``<relpath> <integer label>`` line of list file ``path``."""
    parts = line.rsplit(None, 1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise malformed(path, number, line, expected)
    return parts[0], int(parts[1])


def existing_image(base: Path, relpath: str, source: Path, where: str) -> str:
    """The absolute path of ``base/relpath``; ``where`` says which entry of ``source`` names it. A path that
    leaves ``base`` (absolute, or through ``..``) is refused: a split file names images inside its dataset."""
    inside = os.path.normpath(os.path.join(base, relpath))
    if os.path.isabs(relpath) or not inside.startswith(os.path.join(os.path.normpath(base), "")):
        raise MetapromptError(f"{source}: {where} names {relpath!r}, which lies outside {base}; expected a path "
                              "relative to that folder")
    impath = base / relpath
    if not impath.is_file():
        raise MetapromptError(f"{source}: {where} names {relpath!r}, but {impath} does not exist")
    return str(impath)


def listed(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` in the file system's own order (``os.listdir``'s and ``glob``'s), hidden
    ones (``.DS_Store``, macOS's ``._x.jpg``) left out, as the reference readers' ``listdir_nohidden`` and
    ``glob`` leave them out."""
    with os.scandir(folder) as entries:
        return [e for e in entries if not e.name.startswith(".")]


def subfolders(path: Path, expected: str) -> list[Path]:
    """The sub-folders of ``path``, sorted by name; there must be at least one."""
    found = sorted(Path(e.path) for e in listed(require_dir(path, expected)) if e.is_dir())
    if not found:
        raise MetapromptError(f"{path}: no sub-folders found (expected {expected})")
    return found


def image_files(folder: Path, order: str = BY_NAME, suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
                case_sensitive: bool = False) -> list[Path]:
    """The images directly inside ``folder`` (files with one of ``suffixes``), by name or as listed
    (``scandir``: no stat per file, which matters for ImageNet's 1.3 million images)."""
    def is_image(entry: os.DirEntry) -> bool:
        suffix = os.path.splitext(entry.name)[1]
        return entry.is_file() and (suffix if case_sensitive else suffix.lower()) in suffixes

    found = [Path(e.path) for e in listed(folder) if is_image(e)]
    return found if order == AS_LISTED else sorted(found)


def images_in(folder: Path, order: str = BY_NAME) -> list[Path]:
    """The images directly inside ``folder``; there must be at least one."""
    found = image_files(folder, order)
    if not found:
        raise MetapromptError(f"{folder}: no images found (expected image files such as .jpg or .png)")
    return found


def require_items(items: list[Datum], source: Path, what: str) -> list[Datum]:
    """``items``, which must not be empty: a reader never silently returns an empty split."""
    if not items:
        raise MetapromptError(f"{source}: the {what} split is empty (expected at least one image)")
    return items


def classnames_of(items: Iterable[Datum], source: Path) -> list[str]:
    """Class names indexed by label, from labelled items; labels must run 0..n-1 with one name each."""
    names: dict[int, str] = {}
    for item in items:
        known = names.setdefault(item.label, item.classname)
        if known != item.classname:
            raise MetapromptError(
                f"{source}: label {item.label} is named both {known!r} and {item.classname!r} "
                "(expected one class name per label)")
    if not names:
        raise MetapromptError(f"{source}: no labelled images found")
    labels_of: dict[str, list[int]] = {}
    for label, name in sorted(names.items()):
        labels_of.setdefault(name, []).append(label)
    shared = {name: labels for name, labels in labels_of.items() if len(labels) > 1}
    if shared:
        name, labels = next(iter(shared.items()))
        raise MetapromptError(f"{source}: labels {', '.join(map(str, labels))} are all named {name!r} (expected a "
                              "name of its own for each class: prompts tell classes apart by their names)")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if min(names) < 0 or missing:
        raise MetapromptError(
            f"{source}: labels must run from 0 to {max(names)} without gaps; "
            f"found {len(names)} labels from {min(names)} (missing: {missing[:5]})")
    return [names[label] for label in range(len(names))]
