"""Command lines for the tests that run `metaprompt train` in-process, in a subprocess or under torchrun."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from safetensors.torch import load_file

SMALL = {"coop": ["n_ctx=2"], "metaprompt": ["text_depth=2", "vision_depth=2"]}
"""Options that keep each method small on the tiny model."""


def train_args(method: str, root: Path, out: Path, model: tuple[str, str], *sets: str,
               dataset: str = "imagefolder", extra: tuple[str, ...] = (), progress: bool = False) -> list[str]:
    """`metaprompt train` arguments (without the program name) on the tiny model, with no loader workers."""
    args = ["train", "--method", method, "--dataset", dataset, "--root", str(root), "--out", str(out),
            "--model", model[0], "--pretrained", model[1], "--workers", "0", *extra]
    args += [] if progress else ["--no-progress"]
    for assignment in [*SMALL.get(method, []), *sets]:
        args += ["--set", assignment]
    return args


def metaprompt_command(args: list[str]) -> list[str]:
    """The command line that runs ``args`` in a fresh Python process, as a user types it."""
    return [sys.executable, "-m", "metaprompt", *args]


def one_thread_env() -> dict[str, str]:
    """The environment for a subprocess, with one torch thread (see :func:`one_torch_thread`)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on shared, busy cores run many times faster on one thread than on several that wait for
    each other. Import it into a test module to apply it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prompts(run: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a finished run."""
    return load_file(str(run / "prompts.safetensors"))
