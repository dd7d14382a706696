"""Training curves as TensorBoard event files in the run folder, as Dassl writes them.

Dassl's trainers write ``train/loss``, ``train/acc`` and ``train/lr`` every step (at step ``epoch *
batches_per_epoch + batch``) and ``test/<metric>`` after testing, into ``<output_dir>/tensorboard``. Here the
steps are kept in memory and written whenever the trainer writes a checkpoint, so that the run folder
appears only with its first checkpoint and a resumed run logs the steps it runs again exactly once.
"""
from __future__ import annotations

from pathlib import Path

FOLDER = "tensorboard"


class ScalarLog:
    """Scalars waiting to be written to ``<run folder>/tensorboard`` (one event file per log, opened at the
    first flush)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, float, int]] = []
        self._writer = None

    def add(self, tag: str, value: float, step: int) -> None:
        self.pending.append((tag, float(value), int(step)))

    def flush(self, run_folder: Path) -> None:
        """Write what is pending to the run folder's event file."""
        if not self.pending:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_folder) / FOLDER))
        for tag, value, step in self.pending:
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()
        self.pending = []

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write(run_folder: Path, scalars: list[tuple[str, float, int]]) -> None:
    """Write ``scalars`` (tag, value, step) to the run folder's TensorBoard log at once."""
    log = ScalarLog()
    log.pending = list(scalars)
    log.flush(run_folder)
    log.close()
