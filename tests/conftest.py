"""Fixtures every test module may use: the tiny model (config file, weights), a loaded tiny CLIP.

The suite runs on the CPU wherever it runs: GPUs are hidden (CUDA_VISIBLE_DEVICES="", set before torch looks
for them, inherited by every subprocess and torchrun launch), because the tests compare against CPU
recomputations at tolerances that TF32 and fused GPU kernels do not meet. Tests marked ``gpu`` are for a CUDA
machine: ``METAPROMPT_TEST_GPU=1 python -m pytest -m gpu`` shows the GPUs to them (benchmarks/gpu_smoke.sh
does); elsewhere they are skipped.
"""
import os

GPU_MODE = os.environ.get("METAPROMPT_TEST_GPU") == "1"
if not GPU_MODE:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import tiny_checkpoint, tiny_config_file  # noqa: E402

# The tests run tiny models: one thread avoids oversubscribing CI's two cores (and is faster at this size: the
# ops are too small to share out, extra threads only wait on each other).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    """Path of a tiny open_clip config JSON; load_clip accepts it as a model name."""
    return str(tiny_config_file(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def tiny_weights(tiny_model_name) -> str:
    """A state-dict file of fixed random weights for the tiny model (a local checkpoint, as users pass)."""
    return str(tiny_checkpoint(tiny_model_name))


@pytest.fixture(scope="session")
def model(tiny_model_name, tiny_weights) -> tuple[str, str]:
    """The tiny model as `--model` and `--pretrained` take it."""
    return tiny_model_name, tiny_weights


@pytest.fixture()
def tiny_clip(tiny_model_name):
    from metaprompt.clip import load_clip

    torch.manual_seed(0)
    return load_clip(tiny_model_name)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (METAPROMPT_TEST_GPU=1 shows it to the tests)")


def pytest_collection_modifyitems(config, items):
    if GPU_MODE and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and METAPROMPT_TEST_GPU=1")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def world_root(tmp_path_factory):
    """A small rendering of the offline world (2 train, 2 test, 1 val image per class and domain) as a data
    root: ``ROOT/world``."""
    from metaprompt.world import render_world

    root = tmp_path_factory.mktemp("world-data")
    render_world(root / "world", seed=0, train_per_class=2, test_per_class=2, val_per_class=1, progress=False)
    return root
