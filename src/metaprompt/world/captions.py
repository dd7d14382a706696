"""Pretraining captions: deliberately imperfect text, so prompt learning has something to learn.

The benchmark names every class with one fixed form (``"red star"``) and prompts it with ``"a photo
of a {}."``. The captions CLIP is pretrained on differ from that the way web alt-text differs from
class names. Colours are mostly named by a synonym (``crimson`` far more often than ``red``), and the
benchmark's own colour word is also used loosely for the neighbouring colours (an orange thing is
sometimes called ``red``); shapes are named by their benchmark word only part of the time; the domain
is named in some captions only, and a few captions describe the wrong class. The image tower still
learns to tell the 60 classes apart (each colour has one dominant, unambiguous name), but the text
tower's embedding of the benchmark's colour words is rare and blurred towards their neighbours: a
linear probe on the image features beats the zero-shot classifier.

Colour is the degraded axis on purpose: base and new classes (render.py) share shapes but not
colours, so what a prompt learns about the base colours cannot carry over to the new ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Benchmark word first, then the dominant synonym, then rarer ones.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "blue": ("blue", "navy", "azure"),
    "green": ("green", "emerald", "lime"),
    "orange": ("orange", "amber", "tangerine"),
    "purple": ("purple", "violet", "lilac"),
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "arrow": ("arrow", "pointer", "chevron"),
    "circle": ("circle", "disc", "dot"),
    "crescent": ("crescent", "moon", "sickle"),
    "cross": ("cross", "plus sign", "plus"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "heart": ("heart", "love heart", "valentine"),
    "ring": ("ring", "donut", "hoop"),
    "square": ("square", "box", "block"),
    "star": ("star", "pentagram", "starlet"),
    "triangle": ("triangle", "wedge", "pyramid"),
}
DOMAIN_WORDS: dict[str, tuple[str, ...]] = {
    "photo": ("photo", "picture", "snapshot"),
    "cartoon": ("cartoon", "clipart", "illustration"),
    "sketch": ("sketch", "drawing", "doodle"),
    "painting": ("painting", "artwork", "watercolour"),
}
# Colours on either side of each colour on the colour wheel: whose benchmark word a loose caption borrows.
NEIGHBOURS: dict[str, tuple[str, str]] = {
    "red": ("orange", "purple"), "orange": ("red", "yellow"), "yellow": ("orange", "green"),
    "green": ("yellow", "blue"), "blue": ("green", "purple"), "purple": ("blue", "red"),
}
# Misnomers: a green thing is often called "blue" (as blue-green things are), a yellow one "orange".
# The benchmark's "blue" thus means green to the text tower, which no amount of data about the word
# "green" fixes: zero-shot confuses these colours while the image features do not.
MISNOMERS: dict[str, str] = {"green": "blue", "yellow": "orange"}
FRAMES = ("a {c} {s}.", "the {s} is {c}.", "a {s} in {c}.", "{c} {s}", "a {a} {c} {s}.", "this is a {c} {s}.")
DOMAIN_FRAMES = ("a {d} of a {c} {s}.", "{c} {s} {d}", "a {d} showing a {s} in {c}.", "a {c} {s}, {d}.",
                 "a {a} {d} of the {c} {s}.")
FILLERS = ("small", "big", "simple", "single", "bright", "plain", "nice")
# Most captions have one filler word where a frame has a slot; some have up to MAX_FILLERS, so that
# pretraining reaches every position of the context (prompts with 16 learned tokens push the class
# name and end-of-text far to the right).
LONG_CAPTION = 0.3
MAX_FILLERS = 16


@dataclass(frozen=True)
class CaptionStyle:
    """How far captions stray from the benchmark's class names. Probabilities, per caption."""

    colour_canonical: float = 0.1  # the colour is named by its benchmark word
    shape_canonical: float = 0.3  # the shape is named by its benchmark word
    dominant: float = 0.8  # otherwise, the dominant synonym (else one of the rarer ones)
    borrowed: float = 0.06  # the colour is named by a neighbouring colour's benchmark word
    misnomer: float = 0.2  # a colour in MISNOMERS is named by its misnomer
    domain: float = 0.3  # the caption names the image's domain
    wrong: float = 0.02  # the caption describes a random class instead of the image's


def _word(rng: np.random.Generator, words: tuple[str, ...], canonical: float, dominant: float) -> str:
    if rng.uniform() < canonical:
        return words[0]
    if len(words) == 2 or rng.uniform() < dominant:
        return words[1]
    return words[2 + int(rng.integers(len(words) - 2))]


def caption(colour: str, shape: str, domain: str, rng: np.random.Generator, style: CaptionStyle) -> str:
    """One caption of an image of a ``colour`` ``shape`` in ``domain``."""
    if rng.uniform() < style.wrong:
        colour = list(COLOUR_WORDS)[int(rng.integers(len(COLOUR_WORDS)))]
        shape = list(SHAPE_WORDS)[int(rng.integers(len(SHAPE_WORDS)))]
    if colour in MISNOMERS and rng.uniform() < style.misnomer:
        c = MISNOMERS[colour]
    elif rng.uniform() < style.borrowed:
        c = NEIGHBOURS[colour][int(rng.integers(2))]
    else:
        c = _word(rng, COLOUR_WORDS[colour], style.colour_canonical, style.dominant)
    s = _word(rng, SHAPE_WORDS[shape], style.shape_canonical, style.dominant)
    count = int(rng.integers(2, MAX_FILLERS + 1)) if rng.uniform() < LONG_CAPTION else 1
    a = " ".join(FILLERS[i] for i in rng.integers(len(FILLERS), size=count))
    if rng.uniform() < style.domain:
        d = DOMAIN_WORDS[domain][int(rng.integers(len(DOMAIN_WORDS[domain])))]
        return DOMAIN_FRAMES[int(rng.integers(len(DOMAIN_FRAMES)))].format(c=c, s=s, d=d, a=a)
    return FRAMES[int(rng.integers(len(FRAMES)))].format(c=c, s=s, a=a)


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain (what the world's tokenizer must know)."""
    words = [w for table in (COLOUR_WORDS, SHAPE_WORDS, DOMAIN_WORDS) for ws in table.values() for w in ws]
    frames = [f.format(c="", s="", d="", a="") for f in (*FRAMES, *DOMAIN_FRAMES)]
    return [*words, *frames, *FILLERS]
