"""A training run stopped in its second epoch, by SIGKILL (no chance to save) or by SIGTERM (checkpoint at
the current batch), and re-run with the same command ends with prompts bit-identical to an uninterrupted
run's."""
from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
import torch

from helpers import make_image_folder, metaprompt_command, one_thread_env, prompts, train_args
from metaprompt.cli import main

BATCHES = 20  # per epoch: 40 training images, batch_size 2; many, so that a signal lands inside epoch 2
IN_EPOCH_2 = re.compile(rf"epoch 2/2:[^\r\n]*?\| *[1-9]\d*/{BATCHES} ")
"""The progress bar of epoch 2 after at least one batch."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"), ["ant", "bee", "cat", "dog"], {"train": 10, "test": 1})


def run_args(folder: Path, out: Path, model: tuple[str, str], progress: bool = False) -> list[str]:
    """MetaPrompt (its class splits draw from a generator of their own), two epochs at the full lr."""
    return train_args("metaprompt", folder, out, model, "epochs=2", "warmup_epochs=0", "batch_size=2",
                      extra=("--shots", "0"), progress=progress)


@pytest.fixture(scope="module")
def reference(folder, tiny_model_name, tiny_weights, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(run_args(folder, out, (tiny_model_name, tiny_weights))) == 0
    return prompts(out)


def read_into(stream: BinaryIO, seen: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):
        seen.extend(chunk)


def stop_in_epoch_2(args: list[str], sig: signal.Signals) -> tuple[int, str]:
    """Start the command, send ``sig`` once its progress bar shows a batch of epoch 2 done; exit code, stderr."""
    proc = subprocess.Popen(metaprompt_command(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**one_thread_env(), "METAPROMPT_PROGRESS": "always"})  # bars into the pipe
    seen = bytearray()
    reader = threading.Thread(target=read_into, args=(proc.stderr, seen))
    reader.start()
    deadline = time.monotonic() + 120
    while not IN_EPOCH_2.search(seen.decode(errors="replace")):
        assert proc.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")
        time.sleep(0.01)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    reader.join()
    return code, seen.decode(errors="replace")


def mark_and_resume(args: list[str], out: Path) -> dict[str, torch.Tensor]:
    """Re-run the command. A mark put into the checkpoint's history beforehand must still be in the final
    checkpoint: the re-run continued from the checkpoint instead of starting over."""
    path = out / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state"]["history"][0]["mark"] = "before the re-run"
    torch.save(checkpoint, path)
    assert main([*args, "--keep-checkpoint"]) == 0
    assert torch.load(path, weights_only=True)["state"]["history"][0]["mark"] == "before the re-run"
    return prompts(out)


def assert_bit_identical(resumed: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


def test_sigkill_in_the_second_epoch_then_rerun(folder, tiny_model_name, tiny_weights, tmp_path, reference):
    out, model = tmp_path / "run", (tiny_model_name, tiny_weights)
    code, _ = stop_in_epoch_2(run_args(folder, out, model, progress=True), signal.SIGKILL)
    assert code == -signal.SIGKILL
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["batch"]) == (1, 0) and not (out / "prompts.safetensors").exists()
    assert_bit_identical(mark_and_resume(run_args(folder, out, model), out), reference)


def test_sigterm_checkpoints_the_current_batch_then_rerun(folder, tiny_model_name, tiny_weights, tmp_path,
                                                          reference):
    out, model = tmp_path / "run", (tiny_model_name, tiny_weights)
    code, stderr = stop_in_epoch_2(run_args(folder, out, model, progress=True), signal.SIGTERM)
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state"]
    assert code == 130 and "Traceback" not in stderr
    assert state["epoch"] == 1 and 0 < state["batch"] < BATCHES
    assert (f"metaprompt: interrupted: stopped by a signal in epoch 2 after batch {state['batch']}; progress saved "
            f"in {out / 'checkpoint.pt'}: re-run the same command to resume") in stderr
    assert_bit_identical(mark_and_resume(run_args(folder, out, model), out), reference)


def test_a_resumed_run_trains_on_the_images_its_record_names(tmp_path, tiny_model_name, tiny_weights):
    """The draw is recorded when the run folder is made; a resumed run takes its images from that record,
    even when the data changed since (here a class folder gains images, which would change a fresh draw)."""
    import json
    import shutil

    from metaprompt.tasks import TaskSpec, build_task

    data = make_image_folder(tmp_path / "data", ["ant", "bee", "cat"], {"train": 6, "test": 1})
    out = tmp_path / "run"
    args = train_args("coop", data, out, (tiny_model_name, tiny_weights), "epochs=2", "batch_size=2",
                      extra=("--shots", "2"))
    assert main([*args, "--set", "max_steps=1"]) == 0  # stops after one step: an unfinished run with a checkpoint
    record = json.loads((out / "fewshot.json").read_text())
    for path in ("prompts.safetensors", "metrics.json"):
        (out / path).unlink()
    for i in range(6, 12):
        shutil.copy(data / "train" / "ant" / "0.png", data / "train" / "ant" / f"{i}.png")
    fresh = build_task(TaskSpec("imagefolder", str(data)), shots=2, seed=1)
    assert sorted(Path(d.impath).name for d in fresh.train if d.label == 0) != sorted(
        Path(p).name for p in record["train"] if p.startswith("train/ant/"))
    assert main([*args, "--set", "max_steps=1"]) == 0
    assert json.loads((out / "fewshot.json").read_text()) == record


def test_a_checkpoint_holding_a_malicious_pickle_is_refused_without_running_it(folder, tiny_model_name, tiny_weights,
                                                                              tmp_path, capsys):
    """A checkpoint.pt planted in a run folder is read with torch.load(weights_only=True): its code never runs."""
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"tensors": {}, "state": Payload()}, out / "checkpoint.pt")
    assert main(run_args(folder, out, (tiny_model_name, tiny_weights))) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt: error:")]
    assert len(errors) == 1 and f"checkpoint {out / 'checkpoint.pt'} holds objects other than tensors" in errors[0]
    assert not ran.exists()


def test_promptsrc_keeps_its_prompt_aggregate_across_a_resume(folder, tiny_model_name, tiny_weights, tmp_path):
    """PromptSRC sums each epoch's weighted prompts (Gaussian prompt aggregation): the sum over epoch 1 is in
    the checkpoint, so a run stopped in epoch 2 and re-run ends with the uninterrupted run's aggregate."""
    model = (tiny_model_name, tiny_weights)

    def args(out, progress=False):
        return train_args("promptsrc", folder, out, model, "epochs=2", "warmup_epochs=0", "batch_size=2",
                          "text_depth=2", "vision_depth=2", "gpa_mean=1.5", extra=("--shots", "0"), progress=progress)

    reference = tmp_path / "reference"
    assert main(args(reference)) == 0
    out = tmp_path / "run"
    code, _ = stop_in_epoch_2(args(out, progress=True), signal.SIGTERM)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert code == 130 and set(checkpoint["method_state"]["gpa"]) == {"text_prompts", "visual_prompts"}
    assert_bit_identical(mark_and_resume(args(out), out), prompts(reference))
