"""Cooperative sweep workers: any number of ``metaprompt run`` processes given the same arguments and output
folder, on one machine or several sharing the file system, finish one sweep together.

A worker claims a run by writing a lease, ``OUT/.sweep/leases/<run folder>.json`` (host, pid, start, a
heartbeat it refreshes while the run goes on), under one lock file (filelock) for the whole sweep, so that two
workers never claim the same run. A lease is released when its run ends. A lease whose holder is gone is
taken over: on the same host when its pid is no longer alive, on any host when its heartbeat is older than
``stale_after`` seconds; the run then resumes from its checkpoint (:func:`metaprompt.experiment.train_run`).
No torch here: the lease logic is plain files.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import MetapromptError
from .files import atomic_write_text

SWEEP_DIR = ".sweep"
"""Under a sweep's output folder: leases, the sweep's settings, the frozen-feature store."""
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0
"""Default ``--lease-timeout``: a lease not refreshed for this long is taken over by another worker."""
LOCK_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease."""

    host: str
    pid: int
    started: float
    heartbeat: float
    token: str
    """Unique per claim: a worker whose lease was taken over does not release the new holder's."""

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Leases:
    """The leases of the runs under ``out`` (see the module docstring)."""

    def __init__(self, out: str | Path, stale_after: float = STALE_SECONDS, heartbeat: float = HEARTBEAT_SECONDS):
        if not (isinstance(stale_after, (int, float)) and math.isfinite(stale_after) and stale_after > 0):
            raise MetapromptError(f"--lease-timeout {stale_after}: expected a positive number of seconds")
        self.out = Path(out)
        self.dir = self.out / SWEEP_DIR / "leases"
        self.stale_after, self.heartbeat = stale_after, heartbeat
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MetapromptError(f"cannot write to the output folder {self.out} ({err.strerror}); "
                                  "expected a folder this process can write to") from None
        self.lock = FileLock(str(self.dir / "leases.lock"), timeout=LOCK_TIMEOUT_SECONDS)

    def path(self, folder: Path) -> Path:
        relative = Path(os.path.relpath(folder, self.out))
        return self.dir / ("__".join(relative.parts) + ".json")

    def holder(self, folder: Path) -> Holder | None:
        """The lease's holder, None when there is none (or its file is unreadable: a torn write is no lease)."""
        try:
            holder = Holder(**json.loads(self.path(folder).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        well_formed = (isinstance(holder.host, str) and isinstance(holder.pid, int) and isinstance(holder.token, str)
                       and all(isinstance(t, (int, float)) and math.isfinite(t) for t in (holder.started, holder.heartbeat)))
        return holder if well_formed else None

    def is_stale(self, holder: Holder, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if holder.host == this_host() and not pid_alive(holder.pid):
            return True
        # a heartbeat further in the future than a timeout is no clock skew: it would hold the run forever
        return abs(now - holder.heartbeat) > self.stale_after

    def claim(self, folder: Path) -> "Claim | Holder":
        """Claim the run in ``folder``: a :class:`Claim` (use it as a context manager while the run goes on),
        or the live :class:`Holder` of the lease another worker has."""
        with self.locked():
            current = self.holder(folder)
            if current is not None and not self.is_stale(current):
                return current
            now = time.time()
            mine = Holder(this_host(), os.getpid(), now, now, uuid.uuid4().hex)
            self._write(folder, mine)
            return Claim(self, folder, mine, taken_from=current)

    def release(self, folder: Path, holder: Holder) -> None:
        with self.locked():
            current = self.holder(folder)
            if current is not None and current.token == holder.token:
                self.path(folder).unlink(missing_ok=True)

    def refresh(self, folder: Path, holder: Holder) -> Holder | None:
        """Write a new heartbeat, unless the lease was taken over meanwhile (then None)."""
        with self.locked():
            current = self.holder(folder)
            if current is None or current.token != holder.token:
                return None
            fresh = Holder(**{**asdict(holder), "heartbeat": time.time()})
            self._write(folder, fresh)
            return fresh

    def _write(self, folder: Path, holder: Holder) -> None:
        try:
            atomic_write_text(self.path(folder), json.dumps(asdict(holder)) + "\n")
        except OSError as err:
            raise MetapromptError(f"cannot write the lease {self.path(folder)} ({err.strerror})") from None

    def locked(self):
        """The sweep's lock, held (a context manager)."""
        try:
            return self.lock.acquire()
        except Timeout:
            raise MetapromptError(f"{self.lock.lock_file}: held by another worker for over {self.lock.timeout:g} s "
                                  "(a file system without working locks? every worker's --out must be on one "
                                  "that has them)") from None
        except OSError as err:
            raise MetapromptError(f"cannot lock {self.lock.lock_file} ({err.strerror})") from None


class Claim:
    """A run this worker holds: while entered, a thread refreshes the lease's heartbeat; on exit the lease is
    released (whether the run finished or failed: a failed run is free for the next worker or re-run)."""

    def __init__(self, leases: Leases, folder: Path, holder: Holder, taken_from: Holder | None):
        self.leases, self.folder, self.holder, self.taken_from = leases, folder, holder, taken_from
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Claim":
        self._thread = threading.Thread(target=self._beat, name="metaprompt-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()

    def release(self) -> None:
        self.leases.release(self.folder, self.holder)

    def _beat(self) -> None:
        while not self._stop.wait(self.leases.heartbeat):
            try:
                refreshed = self.leases.refresh(self.folder, self.holder)
            except MetapromptError:
                continue  # a missed heartbeat; the next one tries again
            if refreshed is None:
                return  # taken over: the other worker holds it now
            self.holder = refreshed
