"""The items every dataset reader returns: labelled image paths grouped into splits."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..templates import METAPROMPT, ZERO_SHOT

DEFAULT_TEMPLATE = "default"


def template_key(name: str) -> str:
    """The dataset's key in :mod:`metaprompt.templates`, or ``default`` when it has no template of its own."""
    return name if name in ZERO_SHOT or name in METAPROMPT else DEFAULT_TEMPLATE


@dataclass(frozen=True)
class Datum:
    """One labelled image. ``impath`` is absolute; ``domain`` is empty outside domain generalisation."""

    impath: str
    label: int
    classname: str
    domain: str = ""


@dataclass(frozen=True)
class FewShot:
    """How a task's train / val items were drawn: ``shots`` per class (per class and source domain when
    ``per_domain``), from the run's ``seed``; ``base`` is the folder recorded paths are relative to."""

    shots: int
    seed: int
    base: str
    per_domain: bool = False


@dataclass
class DatasetSplits:
    """A dataset as read from disk: class names indexed by label, and train / val / test items.

    ``domains`` lists the visual domains of a domain-generalisation dataset (each Datum names its
    domain); it is empty for single-domain datasets. ``template`` is the dataset's hand-crafted prompt
    key, looked up in :mod:`metaprompt.templates`.
    """

    name: str
    classnames: list[str]
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    domains: list[str] = field(default_factory=list)
    template: str = "default"
    draw_val: bool = True
    """Few-shot tasks draw their val shots from ``val``; False when ``val`` is the test set (ImageNet), which
    the reference keeps whole."""
    fewshot: FewShot | None = None
    """Set on a task whose train / val were drawn (or taken from a recorded draw)."""

    @classmethod
    def from_splits(cls, name: str, classnames: list[str], splits: Mapping[str, list[Datum]],
                    **extra) -> "DatasetSplits":
        """A dataset as a reader returns it: its train / val / test lists from ``splits`` (a missing one is
        empty), its template key that of its name unless ``extra`` gives one."""
        extra.setdefault("template", template_key(name))
        return cls(name=name, classnames=list(classnames), train=splits.get("train", []),
                   val=splits.get("val", []), test=splits.get("test", []), **extra)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def with_items(self, **splits: list[Datum]) -> "DatasetSplits":
        """A copy with some of train / val / test (or classnames) replaced."""
        return replace(self, **splits)
