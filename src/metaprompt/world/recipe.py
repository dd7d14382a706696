"""The pretraining recipe of the world's tiny CLIP (:mod:`metaprompt.world.pretraining` follows it); no torch
here, so that ``metaprompt world --help`` can show it without loading the training stack."""

DEFAULT_STEPS = 3000
BATCH_SIZE = 60
LEARNING_RATE = 5e-4
WEIGHT_DECAY = 0.1
WARMUP_STEPS = 100
POOL_PER_CLASS = 60
"""Pretraining images rendered per class and domain (its own random stream, disjoint from the benchmarks')."""
MAX_SHIFT = 3
"""Pixels an image is shifted by, at most, each time it is drawn."""
