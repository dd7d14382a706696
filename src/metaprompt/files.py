"""Writing files so that an interruption never leaves half of one (write beside it, then rename over it), and
reading a user's YAML file as data only (``yaml.safe_load``: no tag builds an object or runs code)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import yaml

from .errors import MetapromptError


TEMPORARY_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path`` (creating its folder), then rename it to ``path``.
    The temporary name is this process's and thread's: workers writing one path at once never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}{TEMPORARY_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def yaml_mapping(path: Path, raw: bytes, what: str, keys: str) -> dict:
    """The mapping the YAML (or JSON) text ``raw`` of ``path`` holds; anything else is one line saying what the
    file should be (``what``, e.g. "a YAML dataset descriptor") and which ``keys`` its mapping has."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise MetapromptError(f"{path}: not UTF-8 text (byte {err.start}); expected {what}") from None
    except yaml.YAMLError as err:
        raise MetapromptError(f"{path}: not valid YAML ({' '.join(str(err).split())}); expected {what}") from None
    if not isinstance(data, dict):
        raise MetapromptError(f"{path}: expected a mapping with {keys}, found {type(data).__name__}")
    return data
