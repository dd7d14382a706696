"""Fixtures every test module may use: the tiny model (config file, weights), a loaded tiny CLIP."""
import pytest
import torch

from helpers import tiny_checkpoint, tiny_config_file

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
