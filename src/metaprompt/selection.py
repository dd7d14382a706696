"""Model selection as Dassl offers it (TEST.FINAL_MODEL, CHECKPOINT_FREQ): the final model is the last epoch's
(``final_model: last``, every released config's) or the epoch with the best validation accuracy (``best_val``),
and every ``checkpoint_freq`` epochs the prompts are kept as an artifact of their own (``epochs/prompts-epochE
.safetensors``, the last ``keep_checkpoints`` of them), which ``metaprompt eval --prompts`` evaluates as any
other. What it does after an epoch leaves the training's random streams as they were, so that a run repeats and
resumes bit for bit whatever is selected."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Iterator

from . import distributed as dist
from .artifact import read_artifact, save_artifact
from .checkpoint import rng_states, set_rng_states
from .config import TrainConfig
from .data.base import DatasetSplits
from .errors import MetapromptError
from .evaluation import evaluate_sharded
from .files import atomic_write_text
from .methods import PromptMethod

SNAPSHOT_DIR = "epochs"
BEST_ARTIFACT = "best.safetensors"
BEST_RECORD = "best.json"
SNAPSHOT = re.compile(r"prompts-epoch(\d+)\.safetensors")


def snapshot_name(epoch: int) -> str:
    return f"prompts-epoch{epoch}.safetensors"


class Selection:
    """Called after each whole epoch (``after_epoch``, on every process) and once training ends (``finish``)."""

    def __init__(self, method: PromptMethod, task: DatasetSplits, cfg: TrainConfig, out: Path,
                 skip_bad_images: bool = False):
        self.method, self.task, self.cfg, self.folder = method, task, cfg, Path(out) / SNAPSHOT_DIR
        self.skip_bad_images = skip_bad_images
        if cfg.final_model == "best_val" and not task.val:
            raise MetapromptError(f"train.final_model best_val picks the epoch by its validation accuracy, and this "
                                  f"task ({task.name}) has no validation images; expected final_model last")

    @property
    def active(self) -> bool:
        return self.cfg.final_model == "best_val" or self.cfg.checkpoint_freq > 0

    def after_epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (1-based): a snapshot when it is due, the validation accuracy for best_val."""
        if self.cfg.checkpoint_freq and epoch % self.cfg.checkpoint_freq == 0:
            self._snapshot(epoch)
        if self.cfg.final_model == "best_val":
            with preserved_random_state(self.method):
                accuracy = evaluate_sharded(self.method, self.task.val, self.cfg.test_batch_size,
                                            self.cfg.num_workers, False, self.skip_bad_images, desc="val").accuracy
            best = self.best()
            if dist.is_main() and (best is None or accuracy > best["val_accuracy"]):
                save_artifact(self.folder / BEST_ARTIFACT, self.method)
                atomic_write_text(self.folder / BEST_RECORD, json.dumps({"epoch": epoch, "val_accuracy": accuracy}))
            dist.barrier()

    def best(self) -> dict | None:
        """The best epoch so far and its validation accuracy (kept on disk: a resumed run goes on from it)."""
        path = self.folder / BEST_RECORD
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return {"epoch": int(record["epoch"]), "val_accuracy": float(record["val_accuracy"])}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MetapromptError(f"{path}: unreadable ({err}); expected the record of the best epoch a run "
                                  "writes: delete the run folder (or `train --overwrite`) to start over") from None

    def finish(self) -> dict:
        """The final model into the method (best_val: the best epoch's prompts); what was selected."""
        if self.cfg.final_model != "best_val":
            return {"final_model": "last"}
        best = self.best()
        if best is None:  # no whole epoch was trained (max_steps): the last prompts are all there is
            return {"final_model": "last", "best_epoch": None}
        self.method.load_trained_tensors(read_artifact(self.folder / BEST_ARTIFACT).tensors,
                                         source=str(self.folder / BEST_ARTIFACT))
        return {"final_model": "best_val", "best_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"]}

    def _snapshot(self, epoch: int) -> None:
        if dist.is_main():
            save_artifact(self.folder / snapshot_name(epoch), self.method)
            kept = sorted((int(m.group(1)), p) for p in self.folder.iterdir() if (m := SNAPSHOT.fullmatch(p.name)))
            if self.cfg.keep_checkpoints:
                for _, path in kept[:-self.cfg.keep_checkpoints]:
                    path.unlink(missing_ok=True)


@contextlib.contextmanager
def preserved_random_state(method: PromptMethod) -> Iterator[None]:
    """Every random stream as it was before the body (an evaluation's loader draws from torch's)."""
    states = rng_states(method.random_state(), method.device)
    try:
        yield
    finally:
        method.set_random_state(set_rng_states(states, method.device))
