"""The offline world: a procedurally rendered multi-domain image dataset (60 ``<colour> <shape>``
classes in four domains: photo, cartoon, sketch, painting) and a tiny CLIP pretrained on it.

It stands in for real CLIP weights and datasets where none can be downloaded: the library's methods,
protocols and tests run on it end to end. See docs/world.md.

The names below are imported on first use: rendering the world (also in the processes that render it in
parallel) needs neither torch nor the model.
"""
from importlib import import_module

WORLD_MODEL = "world-tiny"
"""The model name of the world's tiny CLIP (``--model world-tiny``)."""

_HOME = {
    "CLASS_FOLDERS": "render", "CLASSNAMES": "render", "render_world": "render",
    "DOMAINS": "domains",
    "WorldCLIP": "model", "load_world_clip": "model",
    "pretrain": "pretraining",
    "WorldTokenizer": "tokenizer",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
