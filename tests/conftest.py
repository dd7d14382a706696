import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_checkpoint, tiny_config_file  # noqa: E402

# The tests run tiny models: one thread avoids oversubscribing CI's two cores (and is faster at this size).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    """Path of a tiny open_clip config JSON; load_clip accepts it as a model name."""
    return str(tiny_config_file(tmp_path_factory.mktemp("models")))


@pytest.fixture()
def tiny_clip(tiny_model_name):
    from metaprompt.clip import load_clip

    torch.manual_seed(0)
    return load_clip(tiny_model_name)


@pytest.fixture(scope="session")
def tiny_weights(tiny_model_name) -> str:
    """A state-dict file of fixed random weights for the tiny model (a local checkpoint, as users pass)."""
    return str(tiny_checkpoint(tiny_model_name))
