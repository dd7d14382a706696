"""The offline world: a procedurally rendered multi-domain image dataset (60 ``<colour> <shape>``
classes in four domains: photo, cartoon, sketch, painting) and a tiny CLIP pretrained on it.

It stands in for real CLIP weights and datasets where none can be downloaded: the library's methods,
protocols and tests run on it end to end. See docs/world.md.
"""
from .model import WorldCLIP, load_world_clip
from .pretrain import pretrain
from .render import CLASS_FOLDERS, CLASSNAMES, render_world
from .domains import DOMAINS
from .tokenizer import WorldTokenizer

__all__ = ["CLASS_FOLDERS", "CLASSNAMES", "DOMAINS", "WorldCLIP", "WorldTokenizer", "load_world_clip",
           "pretrain", "render_world"]
