"""Writing files so that an interruption never leaves half of one: write beside it, then rename over it."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable


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
