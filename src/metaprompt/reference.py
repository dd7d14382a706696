"""Reference tables: numbers to put beside a sweep's, per dataset, from a small file (``metaprompt report DIR
--reference FILE``), and such a file written from a sweep (``--save-reference FILE --source TEXT``).

A reference file (YAML, or JSON which YAML reads) holds the numbers a paper's tables give, or those of an earlier
sweep, with where they come from::

    source: "Authors, Title, Venue Year, Table N"   # required: printed under every table that uses the file
    settings: {model: ViT-B-16, pretrained: openai, shots: 16}  # optional: what the numbers were measured with
    base2new:
      coop:                          # a run name (`metaprompt run --name`) or a method
        imagenet: [<Base>, <New>]    # optionally [<Base>, <New>, <HM>]: HM must be their harmonic mean
        average: [<Base>, <New>, <HM>]   # the average over the protocol's datasets
    xd:
      coop: {from: imagenet, caltech101: <acc>, average: <acc>}   # targets; from: the source dataset
    dg:
      metaprompt:
        5: {pacs: <acc>, vlcs: <acc>}   # shots per class per source domain: dataset: average over targets

A method's entry may carry its own ``settings``, which override the file's. Every number is an accuracy in
percent; every bad field is one line naming the file, the field and what was expected. The file is read as data
(``yaml.safe_load``). Nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from .benchmark import harmonic_mean
from .errors import MetapromptError
from .files import atomic_write_text, yaml_mapping

PROTOCOLS = ("base2new", "xd", "dg")
"""The protocols a reference file may give numbers for, by the names `metaprompt run` gives them."""
TOP_KEYS = {"source", "settings", "note", "written_by", *PROTOCOLS}
SETTINGS = ("model", "pretrained", "shots", "preset")
"""What a result records that a reference may say its numbers were measured with."""
AVERAGE = "average"
HM_TOLERANCE = 0.02
"""How far a given HM may be from the harmonic mean of its Base and New (published tables round each to 0.01)."""


@dataclass
class Reference:
    """A reference file's numbers: per protocol, per entry (a run name or method), per dataset (``average``: the
    protocol's average), with the settings each entry was measured with."""

    path: Path
    source: str
    base2new: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    xd: dict[str, dict[str, float]] = field(default_factory=dict)
    xd_from: dict[str, str | None] = field(default_factory=dict)
    dg: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    settings: dict[str, dict[str, object]] = field(default_factory=dict)
    """Per (protocol, entry) key ``f"{protocol}/{entry}"``: the settings it was measured with."""

    def settings_of(self, protocol: str, entry: str) -> dict[str, object]:
        return self.settings.get(f"{protocol}/{entry}", {})


def read_reference(path: str | Path) -> Reference:
    """The reference file at ``path``, every field checked."""
    path = Path(path)
    if not path.is_file():
        raise MetapromptError(f"reference file {path} not found (expected a YAML file with a source and numbers "
                              f"under {', '.join(PROTOCOLS)})")
    data = yaml_mapping(path, path.read_bytes(), "a YAML reference file", f"source and {', '.join(PROTOCOLS)}")
    unknown = sorted(map(str, set(data) - TOP_KEYS))
    if unknown:
        raise MetapromptError(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(sorted(TOP_KEYS))})")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise MetapromptError(f"{path}: source is required: where the numbers come from (a paper and its table, or "
                              "the sweep that made them), as one line of text")
    if not any(data.get(p) for p in PROTOCOLS):
        raise MetapromptError(f"{path}: no numbers (expected at least one of {', '.join(PROTOCOLS)})")
    reference = Reference(path, " ".join(source.split()))
    common = _settings(path, "settings", data.get("settings", {}))
    for protocol in PROTOCOLS:
        entries = data.get(protocol) or {}
        if not isinstance(entries, dict):
            raise MetapromptError(f"{path}: {protocol} must map run names or methods to their numbers, found "
                                  f"{type(entries).__name__}")
        for entry, numbers in entries.items():
            where = f"{protocol}.{entry}"
            if not isinstance(entry, str) or not isinstance(numbers, dict) or not numbers:
                raise MetapromptError(f"{path}: {where} must be a run name or method mapping datasets to numbers")
            numbers = dict(numbers)
            own = _settings(path, f"{where}.settings", numbers.pop("settings", {}))
            if not set(numbers) - {"from"}:
                raise MetapromptError(f"{path}: {where} has settings but no numbers")
            reference.settings[f"{protocol}/{entry}"] = {**common, **own}
            _READERS[protocol](reference, path, where, entry, numbers)
    return reference


def _read_base2new(reference: Reference, path: Path, where: str, entry: str, numbers: dict) -> None:
    reference.base2new[entry] = {_dataset(path, where, d): _base_new_hm(path, f"{where}.{d}", v)
                                 for d, v in numbers.items()}


def _read_xd(reference: Reference, path: Path, where: str, entry: str, numbers: dict) -> None:
    source = numbers.pop("from", None)
    if source is not None and not isinstance(source, str):
        raise MetapromptError(f"{path}: {where}.from must be the source dataset's name, found {source!r}")
    reference.xd_from[entry] = source
    reference.xd[entry] = {_dataset(path, where, d): _accuracy(path, f"{where}.{d}", v) for d, v in numbers.items()}


def _read_dg(reference: Reference, path: Path, where: str, entry: str, numbers: dict) -> None:
    reference.dg[entry] = {}
    for shots, datasets in numbers.items():
        if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
            raise MetapromptError(f"{path}: {where}: expected shots per class (a positive integer) as the key, found "
                                  f"{shots!r}")
        if not isinstance(datasets, dict) or not datasets:
            raise MetapromptError(f"{path}: {where}.{shots} must map datasets to their average over target domains")
        reference.dg[entry][shots] = {_dataset(path, f"{where}.{shots}", d): _accuracy(path, f"{where}.{shots}.{d}", v)
                                      for d, v in datasets.items()}


_READERS = {"base2new": _read_base2new, "xd": _read_xd, "dg": _read_dg}


def _settings(path: Path, where: str, value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MetapromptError(f"{path}: {where} must be a mapping of {', '.join(SETTINGS)}, found {value!r}")
    unknown = sorted(map(str, set(value) - set(SETTINGS)))
    if unknown:
        raise MetapromptError(f"{path}: {where}: unknown setting {unknown[0]!r} (expected {', '.join(SETTINGS)})")
    return dict(value)


def _dataset(path: Path, where: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise MetapromptError(f"{path}: {where}: expected dataset names (or {AVERAGE!r}) as keys, found {name!r}")
    return name


def _accuracy(path: Path, where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 100:
        raise MetapromptError(f"{path}: {where} must be an accuracy in percent (a number from 0 to 100), found "
                              f"{value!r}")
    return float(value)


def _base_new_hm(path: Path, where: str, value: object) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise MetapromptError(f"{path}: {where} must be [Base, New] or [Base, New, HM] in percent, found {value!r}")
    base, new, *hm = (_accuracy(path, where, v) for v in value)
    expected = harmonic_mean(base, new)
    if hm and abs(hm[0] - expected) > HM_TOLERANCE:
        raise MetapromptError(f"{path}: {where}: HM {hm[0]} is not the harmonic mean of Base {base} and New {new} "
                              f"(expected {expected:.2f}); check the numbers against their source")
    return base, new, hm[0] if hm else expected


def write_reference(path: str | Path, source: str, numbers: dict[str, dict], settings: dict[str, dict],
                    made_from: str, version: str) -> Path:
    """Write ``numbers`` (per protocol, per entry, as :func:`read_reference` reads them) with each entry's
    ``settings`` as a reference file at ``path``; it reads back as it was written."""
    if not source.strip():
        raise MetapromptError("--source is required with --save-reference: where the numbers come from, as one line")
    document: dict[str, object] = {
        "source": " ".join(source.split()),
        "written_by": f"metaprompt {version} report {made_from} on {date.today().isoformat()}"}
    for protocol in PROTOCOLS:
        entries = {entry: ({"settings": settings[f"{protocol}/{entry}"]} if settings.get(f"{protocol}/{entry}")
                           else {}) | values for entry, values in numbers.get(protocol, {}).items() if values}
        if entries:
            document[protocol] = entries
    if not any(p in document for p in PROTOCOLS):
        raise MetapromptError(f"no base-to-new, cross-dataset or domain-generalisation results under {made_from} "
                              "to write as a reference")
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)
    path = atomic_write_text(path, text)
    read_reference(path)  # what was written reads back
    return path
