"""A run's ``log.txt``, as Dassl keeps one beside every output: time-stamped plain lines of what the console
said while the run went on (progress-bar frames left out), below a header with the command line, the package
versions and the project's version and git commit (:func:`provenance`, also recorded in metrics.json and
result.json).

Lines wait in memory until this invocation has written something of the run into its folder (its config.yaml
or result.json): a command that fails before that leaves the folder as it was, without a log.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator, TextIO

from . import __version__
from .benchmark import RESULT_NAME

LOG_NAME = "log.txt"
PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "safetensors", "Pillow", "scikit-learn")
"""The packages whose versions change a number, recorded with every run."""
RUN_MARKERS = ("config.yaml", RESULT_NAME)
"""Files that show the run folder holds a run: the log is written from then on."""

BARS_ENV = "METAPROMPT_PROGRESS"
"""``METAPROMPT_PROGRESS=always`` shows progress bars where stderr is no terminal too."""

command_line: list[str] = []
"""The command as typed (``metaprompt`` and its arguments); set by the command line's entry point."""
dataset_files: dict[str, dict[str, str]] = {}
"""Dataset name -> the descriptor file it was read from and its SHA-256, for the datasets the command named by a
descriptor (:mod:`metaprompt.data.descriptor`)."""


def progress_bars(requested: bool | None) -> bool:
    """Whether to draw progress bars: when asked for, on a terminal (or with METAPROMPT_PROGRESS=always). Where
    output is redirected (a cluster job's log) bars would be carriage-return frames; runs print lines instead."""
    return bool(requested) and (sys.stderr.isatty() or os.environ.get(BARS_ENV) == "always")


def provenance() -> dict:
    """What produced a run: the command line, the project's version and git commit, the package versions."""
    return {"command": shlex.join(command_line) if command_line else None, "metaprompt": __version__,
            "git_commit": git_commit(), "python": platform.python_version(), "packages": package_versions(),
            **({"dataset_descriptors": dict(dataset_files)} if dataset_files else {})}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout this package runs from (``+dirty`` with uncommitted changes); None for an
    installed copy that is no checkout, or where git is missing."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class RunLog:
    """Collects console text into time-stamped lines for ``folder/log.txt``. A carriage return drops the line
    being written (a progress bar's frame), a newline ends it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.before = {name: _stamp(folder / name) for name in RUN_MARKERS}
        """The run files as they were: the log is written once one of them is (re)written."""
        self.partial = ""
        self.waiting: list[str] = [f"{_now()} {line}" for line in _header()]

    def feed(self, text: str) -> None:
        for piece in text.replace("\r\n", "\n").splitlines(keepends=True):  # pieces end at a \r or a \n
            if piece.endswith("\r"):
                self.partial = ""
            elif piece.endswith("\n"):
                line = (self.partial + piece[:-1]).rstrip()
                self.partial = ""
                if line:
                    self.waiting.append(f"{_now()} {line}")
                    self.flush()
            else:
                self.partial += piece

    def flush(self) -> None:
        if self.waiting and any(_stamp(self.folder / name) not in (None, self.before[name]) for name in RUN_MARKERS):
            with (self.folder / LOG_NAME).open("a", encoding="utf-8") as stream:
                stream.write("".join(f"{line}\n" for line in self.waiting))
            self.waiting = []


class _Tee:
    """A console stream that also feeds a :class:`RunLog`."""

    def __init__(self, stream: TextIO, log: RunLog):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.feed(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):  # flush, isatty, fileno, encoding ... of the console stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def run_log(folder: str | Path, enabled: bool = True) -> Iterator[None]:
    """While the body runs, what it prints to stdout and stderr also goes to ``folder/log.txt``."""
    if not enabled:
        yield
        return
    log = RunLog(Path(folder))
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield
    except BaseException as error:
        log.feed(f"stopped: {' '.join(str(error).split()) or type(error).__name__}\n")
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        log.feed("\n" if log.partial else "")
        log.flush()


def _header() -> list[str]:
    info = provenance()
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items() if version)
    return [f"command: {info['command'] or '(not from the command line)'}",
            f"metaprompt {info['metaprompt']} (git commit {info['git_commit'] or 'unknown: not a checkout'}), "
            f"python {info['python']}, {packages}",
            *(f"dataset {name}: descriptor {d['descriptor']} (sha256 {d['sha256']})"
              for name, d in info.get("dataset_descriptors", {}).items())]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from another (inode, size, modification time), or None when absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
