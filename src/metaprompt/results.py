"""The results store (every ``result.json`` under a folder), the literature's tables, and a figure.

Conventions, as the published tables use them:

- Base-to-new: per dataset, Base and New are means over seeds and HM is the harmonic mean of those two
  means (its ± is the spread of the per-seed HMs). The Average row averages Base and New over the
  datasets; its HM is the harmonic mean of the two averages, not the average of the HMs.
- Domain generalisation: per target domain the mean over seeds; the average over target domains.
- Cross-dataset transfer: per target the mean over seeds; the average over the targets (not the source).

The ± is the population standard deviation over seeds (numpy's default, which CoOp's result parser uses).

Like is compared with like (:func:`like_with_like`): runs of one name whose settings differ (model, weights,
shots, preset, departures, precision, any option) are different columns, labelled by what differs; a seed is
counted once; a column that departs from the published config it follows is marked † and its table's note
lists the departures.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, pstdev
from typing import Callable, Iterable

from .benchmark import (BASE_TO_NEW_DATASETS, CROSS_DATASET_TARGETS, DG_DOMAINS, IMAGENET_VARIANTS, METHOD_ORDER,
                        PAPER, PUBLISHED_BASE_TO_NEW, PUBLISHED_DG, PUBLISHED_ELSEWHERE, harmonic_mean)
from .errors import MetapromptError
from .reference import AVERAGE, PROTOCOLS, SETTINGS, Reference

FORMATS = ("md", "csv", "latex")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None = None
    """Over seeds; None for a cell derived from other cells (an average)."""
    seeds: int = 0
    covers: tuple[int, int] | None = None
    """An average over some of its parts: (parts present, parts the protocol has), e.g. 2 of 4 targets."""

    @property
    def partial(self) -> bool:
        return self.covers is not None and self.covers[0] < self.covers[1]


@dataclass
class Table:
    """Rows of cells under ``columns``; ``stub`` heads the row labels; the last ``summary_rows`` rows (the
    Average) are set apart."""

    title: str
    stub: str
    columns: list[str]
    rows: list[tuple[str, list[Stat | None]]]
    summary_rows: int = 0
    note: str = ""
    decimals: int = 2
    plot: str = "bars"
    """As a figure panel: ``bars`` (a bar group per column) or ``lines`` (a line per row over the columns)."""
    protocol: str = ""
    """The protocol whose runs it shows ('' for tables over all)."""


@dataclass
class Report:
    tables: list[Table]
    """What is printed."""
    panels: list[Table]
    """What is plotted: one bar chart per table, a bar group per column, a bar per row (method)."""


def over_seeds(values: list[float]) -> Stat:
    return Stat(fmean(values), pstdev(values), len(values))


def build_report(results: list[dict], paper: bool = False, references: Iterable[Reference] = (),
                 warn: Callable[[str], None] | None = None) -> Report:
    """The tables and figure panels of every protocol present in ``results``; with ``paper``, the published
    numbers beside the measured ones (:func:`paper_tables`); with ``references``, each file's numbers beside the
    measured ones, per dataset (:func:`reference_tables`; an entry no run matches is one line to ``warn``)."""
    results, footnotes = like_with_like(results)
    report = _build_report(results)
    if paper:
        report.tables += paper_tables(results)
    for reference in references:
        report.tables += reference_tables(results, reference, warn or (lambda line: None))
    for table in report.tables:
        shown = [label for label, _ in table.rows] + table.columns
        marks = [f"{label} departs from {text}" for (protocol, label), texts in footnotes.items()
                 if protocol == table.protocol and (any(s == label or s.startswith(label + " ") for s in shown)
                                                    or f", {label}: " in table.title)  # a table of one label
                 for text in sorted(texts)]
        if marks:
            table.note = "; ".join(filter(None, [table.note, *marks]))
    return report


DEPARTS = "†"
SHOTS_PROTOCOLS = ("base2new", "xd")
"""Protocols whose tables hold one shot count per column (DG and few-shot tables have shots as an axis)."""


def like_with_like(results: list[dict]) -> tuple[list[dict], dict[tuple[str, str], set[str]]]:
    """``results`` with each run's ``name`` replaced by its column label, and each departing label's footnote.

    Runs of one name fall into groups by everything that changes a number (the settings of the command that
    made them, and shots where a table does not show them as an axis); a name with several groups gets a
    label per group naming what differs (``coop (lr=0.01)``). A label whose runs depart from the published
    config is marked †. One result per (label, dataset, target, source, shots, seed) is kept: a seed is counted
    once."""
    keyed = [(r, _group_key(r)) for r in results]
    by_name: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r, key in keyed:
        if key not in by_name[(r["protocol"], r["name"])]:
            by_name[(r["protocol"], r["name"])].append(key)
    labelled, seen, footnotes = [], set(), defaultdict(set)
    for r, key in keyed:
        keys = by_name[(r["protocol"], r["name"])]
        label = r["name"] + _difference(key, keys)
        if r.get("departures") and r.get("follows"):
            label += DEPARTS
            footnotes[(r["protocol"], label)].add(f"{r['follows']}: {_departure_text(r)}")
        identity = (r["protocol"], label, r["dataset"], r.get("target"), r.get("source"), r.get("shots"), r.get("seed"))
        if identity not in seen:
            seen.add(identity)
            labelled.append({**r, "name": label})
    return labelled, dict(footnotes)


def _group_key(r: dict) -> dict:
    """What makes two runs of one name comparable: the sweep's settings (older results: the fields they have)."""
    key = dict(r["sweep"]) if isinstance(r.get("sweep"), dict) else {
        "model": r.get("model"), "pretrained": r.get("pretrained"), "preset": r.get("preset"),
        "train.precision": r.get("precision"),
        **{k: v.get("used") for k, v in (r.get("departures") or {}).items() if isinstance(v, dict)}}
    if r["protocol"] in SHOTS_PROTOCOLS and r.get("method") != "zeroshot":
        key["train.shots"] = r.get("shots")
    return key


def _difference(key: dict, keys: list[dict]) -> str:
    """`` (k=v, ...)``: the settings in which ``key`` differs from the other groups of its name ('' if alone)."""
    if len(keys) < 2:
        return ""
    differing = sorted({k for other in keys for k in set(other) | set(key) if other.get(k) != key.get(k)})
    return " (" + ", ".join(f"{k.split('.')[-1]}={_short(key.get(k))}" for k in differing) + ")"


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else "…" + text[-23:]


def _departure_text(r: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v.get('used')!r} (published {v.get('published')!r})"
                     for k, v in r["departures"].items() if isinstance(v, dict))


def _build_report(results: list[dict]) -> Report:
    by_protocol = _group(results, "protocol")
    report = Report([], [])
    if ("base2new",) in by_protocol:
        table = base_to_new_table(by_protocol[("base2new",)])
        table.protocol = "base2new"
        report.tables.append(table)
        report.panels.append(_base_to_new_panel(table))
    if ("dg",) in by_protocol:
        tables = _of("dg", dg_tables(by_protocol[("dg",)]))
        report.tables += tables
        report.panels.append(tables[-1])
        report.panels += [_accuracies_only(t) for t in tables if t.columns == list(DG_GAP_COLUMNS)]
    if ("xd",) in by_protocol:
        tables = _of("xd", xd_tables(by_protocol[("xd",)]))
        report.tables += tables
        report.panels += tables
    if ("fewshot",) in by_protocol:
        tables = _of("fewshot", fewshot_tables(by_protocol[("fewshot",)]))
        report.tables += tables
        report.panels += tables
    costs = cost_table(results)
    if costs is not None:
        report.tables.append(costs)
    return report


def paper_tables(results: list[dict]) -> list[Table]:
    """The published numbers (:data:`metaprompt.benchmark.PUBLISHED_BASE_TO_NEW`, ``PUBLISHED_DG``) beside the
    measured ones, with their difference (measured - published), for the runs of the methods the paper reports; a
    measured average over fewer datasets or targets than the paper's says so (k/n), and a departing run is †."""
    tables = []
    method_of = {r["name"]: r["method"] for r in results}
    b2n = [r for r in results if r["protocol"] == "base2new" and r["method"] in PUBLISHED_BASE_TO_NEW]
    if b2n:
        table = base_to_new_table(b2n)
        average = table.rows[-1][1]
        rows = []
        for label, cells in _by_label(table, average).items():
            published = PUBLISHED_BASE_TO_NEW[method_of[label]]
            rows.append((label, [cell for paper, measured in zip(published, cells)
                                 for cell in _beside(paper, measured)]))
        columns = [f"{c}{part}" for c in B2N_METRICS for part in (" (paper)", "", " Δ")]
        methods = {method_of[label] for label, _ in rows}
        sources = [PAPER] * bool(methods - set(PUBLISHED_ELSEWHERE)) + [
            f"{m}: {source}" for m, (_, source) in PUBLISHED_ELSEWHERE.items() if m in methods]
        tables.append(Table("Base-to-new, average over the 11 datasets: published vs measured", "method", columns,
                            rows, note=f"published: {'; '.join(sources)}; Δ = measured - published; "
                                       + (_partial_note(average, "datasets") or "every dataset measured"),
                            protocol="base2new"))
    dg = [r for r in results if r["protocol"] == "dg" and (r["method"], r["shots"]) in PUBLISHED_DG]
    if dg:
        summary = dg_tables(dg)[-1]
        datasets = [d for d in DG_DOMAINS if d != "world_dg"]
        rows = []
        for (name, shots), (label, cells) in zip(_variants(dg), summary.rows):
            measured = dict(zip(summary.columns, cells))
            published = PUBLISHED_DG[(method_of[name], shots)]
            rows.append((label, [c for d in datasets for c in _beside(published[d], measured.get(d))]))
        columns = [f"{d}{part}" for d in datasets for part in (" (paper)", "", " Δ")]
        tables.append(Table("Domain generalisation, average over target domains: published vs measured", "method",
                            columns, rows, note=f"published: {PAPER}; Δ = measured - published",
                            decimals=1, protocol="dg"))
    return tables


def _beside(published: float, measured: Stat | None) -> list[Stat | None]:
    """The published number, the measured one, and their difference (carrying the measured one's coverage)."""
    if measured is None:
        return [Stat(published), None, None]
    return [Stat(published), measured, Stat(measured.mean - published, covers=measured.covers)]


def _of(protocol: str, tables: list[Table]) -> list[Table]:
    for table in tables:
        table.protocol = protocol
    return tables


# ------------------------------------------------------------------ reference files beside the measured numbers

REFERENCE_PARTS = (" (ref)", "", " Δ")


def reference_tables(results: list[dict], reference: Reference, warn: Callable[[str], None]) -> list[Table]:
    """``reference``'s numbers beside the measured ones of the runs each entry names (by run name, else by
    method), per dataset, with the difference (measured - reference): per base-to-new entry a table of datasets
    and the Average; per cross-dataset entry a table of targets; one domain-generalisation table of method and
    shots against datasets. A table whose runs were measured with other settings than the reference names
    (model, weights, shots, preset) says so in its note."""
    tables = []
    by_protocol = _group(results, "protocol")
    for protocol in PROTOCOLS:
        entries = getattr(reference, protocol)
        own = by_protocol.get((protocol,), [])
        matched = {entry: _matching(entry, own) for entry in entries}
        for entry, labels in matched.items():
            if not labels:
                warn(f"{reference.path}: {protocol}.{entry}: no {protocol} run is named {entry!r} or of method "
                     f"{entry!r}; its numbers are not shown")
        if not any(matched.values()):
            continue
        if protocol == "base2new":
            measured = base_to_new_table(own)
            tables += [_base_to_new_reference(reference, entry, label, measured, own)
                       for entry, labels in matched.items() for label in labels]
        elif protocol == "xd":
            tables += [_xd_reference(reference, entry, label, [r for r in own if r["name"] == label])
                       for entry, labels in matched.items() for label in labels]
        else:
            tables.append(_dg_reference(reference, matched, own))
    return tables


def _matching(entry: str, results: list[dict]) -> list[str]:
    """The column labels of the runs ``entry`` names: the label itself (a file written by --save-reference names
    labels), else every like-with-like variant of the run name ``entry``, else the runs of method ``entry``; in
    table order."""
    labels = _names(results)
    for named in ([label for label in labels if label.rstrip(DEPARTS) == entry],
                  [label for label in labels if label.split(" (")[0].rstrip(DEPARTS) == entry]):
        if named:
            return named
    methods = {r["name"]: r["method"] for r in results}
    return [label for label in labels if methods[label] == entry]


def _settings_note(reference: Reference, protocol: str, entry: str, label: str, runs: list[dict]) -> str:
    """Which settings of ``label``'s runs differ from those the reference says its numbers were measured with."""
    wanted = reference.settings_of(protocol, entry)
    differing = []
    for key in SETTINGS:
        if key not in wanted or (key == "shots" and (protocol == "dg" or runs and runs[0]["method"] == "zeroshot")):
            continue
        used = sorted({str(r.get(key)) for r in runs})
        if any(_setting(value) != _setting(wanted[key]) for value in used):
            differing.append(f"{key} {'/'.join(used)} (reference: {wanted[key]})")
    return f"{label} differs from the reference's settings: {', '.join(differing)}" if differing else ""


def _setting(value) -> str:
    """A setting as compared: OpenAI's model names (``ViT-B/16``) equal open_clip's (``ViT-B-16``)."""
    return str(value).replace("/", "-")


def _reference_note(reference: Reference, *parts: str) -> str:
    return "; ".join(filter(None, [f"reference: {reference.source} ({reference.path.name}); "
                                   "Δ = measured - reference", *parts]))


def _base_to_new_reference(reference: Reference, entry: str, label: str, measured: Table,
                           results: list[dict]) -> Table:
    cells = {row: _by_label(measured, values)[label] for row, values in measured.rows}
    published = reference.base2new[entry]
    datasets = _ordered(set(published) - {AVERAGE}, BASE_TO_NEW_DATASETS) + [AVERAGE] * (AVERAGE in published)
    rows = []
    for dataset in datasets:
        ours = cells.get("Average" if dataset == AVERAGE else dataset) or [None] * 3
        rows.append(("Average" if dataset == AVERAGE else dataset,
                     [c for paper, mine in zip(published[dataset], ours) for c in _beside(paper, mine)]))
    runs = [r for r in results if r["name"] == label]
    note = _reference_note(reference, _settings_note(reference, "base2new", entry, label, runs),
                           _partial_note(cells["Average"], "datasets"))
    return Table(f"Base-to-new, {label}: reference vs measured", "dataset",
                 [f"{m}{part}" for m in B2N_METRICS for part in REFERENCE_PARTS], rows,
                 int(AVERAGE in published), note, protocol="base2new")


def _xd_reference(reference: Reference, entry: str, label: str, runs: list[dict]) -> Table:
    sources = sorted({r["source"] for r in runs})
    source = reference.xd_from.get(entry) or sources[0]
    cells = _xd_cells(runs, label, source)
    published = reference.xd[entry]
    order = [source, *CROSS_DATASET_TARGETS]
    targets = _ordered(set(published) - {AVERAGE}, order) + [AVERAGE] * (AVERAGE in published)
    rows = [("Average" if t == AVERAGE else t, _beside(published[t], cells.get(t))) for t in targets]
    other = [] if source in sources else [f"no {label} run trained on {source}"]
    note = _reference_note(reference, *other, _settings_note(reference, "xd", entry, label, runs),
                           _partial_note([cells.get(AVERAGE)], "target datasets"))
    return Table(f"Cross-dataset transfer from {source}, {label}: reference vs measured", "target",
                 [f"Accuracy{part}" for part in REFERENCE_PARTS], rows, int(AVERAGE in published), note,
                 protocol="xd")


def _xd_cells(runs: list[dict], label: str, source: str) -> dict[str, Stat | None]:
    """``label``'s measured accuracy from ``source``, by dataset (the source's own and each target's) and
    ``average`` (over the cross-dataset targets, as the protocol's table averages them: not the ImageNet
    variants)."""
    cells: dict[str, Stat | None] = {}
    for table in xd_tables([r for r in runs if r["source"] == source]):
        for column, cell in zip(table.columns, dict(table.rows)[label]):
            if column != "Average":
                cells[source if column == f"{source} (source)" else column] = cell
            elif table.title.startswith("Cross-dataset"):
                cells[AVERAGE] = cell
    return cells


def _dg_reference(reference: Reference, matched: dict[str, list[str]], results: list[dict]) -> Table:
    summary = dg_tables(results)[-1]
    measured = {label: dict(zip(summary.columns, cells)) for label, cells in summary.rows}
    datasets = _ordered({d for entry in reference.dg.values() for shots in entry.values() for d in shots}, DG_DOMAINS)
    rows, notes = [], []
    for entry, labels in matched.items():
        for shots, published in sorted(reference.dg[entry].items()):
            for label in labels:
                ours = measured.get(_variant_label((label, shots)), {})
                rows.append((_variant_label((label, shots)),
                             [c for d in datasets for c in (_beside(published[d], ours.get(d)) if d in published
                                                            else [None, ours.get(d), None])]))
                runs = [r for r in results if r["name"] == label and r["shots"] == shots]
                notes.append(_settings_note(reference, "dg", entry, label, runs))
    note = _reference_note(reference, *dict.fromkeys(notes), _partial_note(
        [c for _, cells in rows for c in cells], "target domains"))
    return Table("Domain generalisation, average over target domains: reference vs measured", "method",
                 [f"{d}{part}" for d in datasets for part in REFERENCE_PARTS], rows, note=note, decimals=1,
                 protocol="dg")


def reference_numbers(results: list[dict], warn: Callable[[str], None] = lambda line: None,
                      ) -> tuple[dict[str, dict], dict[str, dict]]:
    """The measured means of ``results``, per protocol and column label, as a reference file holds them (a
    partial average is left out: it is not the protocol's average), and each label's settings."""
    results, _ = like_with_like(results)
    by_protocol = _group(results, "protocol")
    numbers: dict[str, dict] = {}
    settings: dict[str, dict] = {}
    if ("base2new",) in by_protocol:
        table = base_to_new_table(by_protocol[("base2new",)])
        per_row = {(AVERAGE if row == "Average" else row): _by_label(table, cells) for row, cells in table.rows}
        numbers["base2new"] = {label: {row: [round(c.mean, 2) for c in by[label]] for row, by in per_row.items()
                                       if by[label][0] is not None and not by[label][0].partial}
                               for label in per_row[AVERAGE]}
    if ("xd",) in by_protocol:
        numbers["xd"] = {}
        for label in _names(by_protocol[("xd",)]):
            runs = [r for r in by_protocol[("xd",)] if r["name"] == label]
            sources = sorted({r["source"] for r in runs})
            if len(sources) > 1:
                warn(f"xd {label}: runs from {len(sources)} sources ({', '.join(sources)}); the reference holds "
                     f"those from {sources[0]} only (give the others --name of their own to keep them)")
            entry: dict[str, object] = {"from": sources[0]}
            entry |= {d: round(c.mean, 2) for d, c in _xd_cells(runs, label, sources[0]).items()
                      if c is not None and not c.partial}
            numbers["xd"][label] = entry
    if ("dg",) in by_protocol:
        summary = dg_tables(by_protocol[("dg",)])[-1]
        numbers["dg"] = defaultdict(dict)
        for (name, shots), (_, cells) in zip(_variants(by_protocol[("dg",)]), summary.rows):
            numbers["dg"][name][shots] = {d: round(c.mean, 2) for d, c in zip(summary.columns, cells)
                                          if c is not None and not c.partial}
        numbers["dg"] = {name: {k: v for k, v in by_shots.items() if v} for name, by_shots in numbers["dg"].items()}
    for protocol, entries in numbers.items():
        for label in entries:
            runs = [r for r in by_protocol[(protocol,)] if r["name"] == label]
            settings[f"{protocol}/{label.rstrip(DEPARTS)}"] = _common_settings(runs, protocol)
    numbers = {p: {label.rstrip(DEPARTS): values for label, values in entries.items()}  # † marks, it names nothing
               for p, entries in numbers.items()}
    return numbers, settings


def _common_settings(runs: list[dict], protocol: str) -> dict[str, object]:
    """The settings all of ``runs`` share (shots only where the protocol's tables hold one shot count)."""
    keys = [k for k in SETTINGS if k != "shots" or (protocol in SHOTS_PROTOCOLS and runs[0]["method"] != "zeroshot")]
    common = {}
    for key in keys:
        values = {json.dumps(r.get(key)) for r in runs}
        if len(values) == 1 and runs[0].get(key) is not None:
            common[key] = runs[0][key]
    return common


# ------------------------------------------------------------------ few-shot classification

def fewshot_tables(results: list[dict]) -> list[Table]:
    """Per dataset, then on average over the datasets: rows = methods, columns = shot counts (accuracy over all
    classes, mean over seeds); plotted as accuracy against shots, the field's standard figure."""
    datasets = _ordered({r["dataset"] for r in results}, BASE_TO_NEW_DATASETS)
    shots = sorted({r["shots"] for r in results})
    names = _names(results)
    runs = _group(results, "dataset", "name", "shots")
    columns = [f"{k} shot{'s' if k > 1 else ''}" for k in shots]
    tables = []
    for dataset in datasets:
        rows = [(name, [_accuracy(runs.get((dataset, name, k))) for k in shots]) for name in names]
        tables.append(Table(f"Few-shot classification: {dataset}", "method", columns, rows, plot="lines"))
    if len(datasets) > 1:
        rows = [(name, [_mean_cell([_accuracy(runs.get((d, name, k))) for d in datasets], expected=len(datasets))
                        for k in shots]) for name in names]
        note = _partial_note([c for _, cells in rows for c in cells], "datasets")
        tables.append(Table(f"Few-shot classification: average over {len(datasets)} datasets", "method", columns,
                            rows, note=note, plot="lines"))
    return tables


# ------------------------------------------------------------------ cost

COST_COLUMNS = (  # (column, the run's cost entry, scale)
    ("trainable params (k)", "trainable_parameters", 1e-3),
    ("GFLOP / train step", "train_step_gflop", 1), ("train s", "train_seconds", 1),
    ("train img/s", "train_images_per_second", 1), ("eval s", "eval_seconds", 1),
    ("eval img/s", "eval_images_per_second", 1), ("peak MiB", "peak_memory_mib", 1),
    ("features from store %", "store_share", 100))


def cost_table(results: list[dict]) -> Table | None:
    """Per protocol and method: what a run cost on average (parameters, FLOPs, wall times, throughput,
    peak memory, the share of test features the store served); None when no result records its cost."""
    costed = [r for r in results if r.get("cost")]
    if not costed:
        return None
    rows = []
    for (protocol, name), runs in sorted(_group(costed, "protocol", "name").items(),
                                         key=lambda item: (item[0][0], _name_key(costed)(item[0][1]))):
        cells = []
        for _, key, scale in COST_COLUMNS:
            values = [r["cost"][key] * scale for r in runs if r["cost"].get(key) is not None]
            cells.append(Stat(fmean(values)) if values else None)
        rows.append((f"{protocol} {name} ({len(runs)} runs)", cells))
    memory = sorted({r["cost"].get("peak_memory_of", "?") for r in costed})
    return Table("Cost per run (mean over runs)", "protocol / method", [c for c, _, _ in COST_COLUMNS], rows,
                 note=f"peak memory: {', '.join(memory)}; GFLOP counted on the first training step; "
                      "wall times of the last invocation of each run", decimals=1)


# ------------------------------------------------------------------ base-to-new

B2N_METRICS = ("Base", "New", "HM")


def base_to_new_table(results: list[dict]) -> Table:
    """Rows: datasets, then the Average; columns: Base, New and HM of each method, side by side."""
    names = _names(results)
    datasets = _ordered({r["dataset"] for r in results}, BASE_TO_NEW_DATASETS)
    runs = _group(results, "name", "dataset")
    rows = [(dataset, [cell for name in names for cell in _base_to_new_cells(runs.get((name, dataset)))])
            for dataset in datasets]
    average = _column_means(rows)
    for k in range(len(names)):
        base, new = average[3 * k], average[3 * k + 1]
        average[3 * k + 2] = Stat(harmonic_mean(base.mean, new.mean))
    expected = len(BASE_TO_NEW_DATASETS) if set(datasets) <= set(BASE_TO_NEW_DATASETS) else len(datasets)
    for k, name in enumerate(names):
        covered = sum((name, d) in runs for d in datasets)
        average[3 * k:3 * k + 3] = [None if cell is None else Stat(cell.mean, covers=(covered, expected))
                                    for cell in average[3 * k:3 * k + 3]]
    note = _partial_note(average, "datasets")
    columns = [f"{name} {metric}" for name in names for metric in B2N_METRICS]
    return Table(f"Base-to-new generalisation{_shots_title(results)}", "dataset", columns,
                 rows + [("Average", average)], 1, note)


def _shots_title(results: list[dict]) -> str:
    """`` (16 shots)`` when every trained run of the table has the same shots (else the labels say them)."""
    shots = {r.get("shots") for r in results if r.get("method") != "zeroshot"}
    if len(shots) != 1 or None in shots:
        return ""
    k = shots.pop()
    return f" ({k} shot{'s' if k != 1 else ''})"


def _base_to_new_cells(runs: list[dict] | None) -> list[Stat | None]:
    if not runs:
        return [None] * len(B2N_METRICS)
    base = over_seeds([r["metrics"]["base"] for r in runs])
    new = over_seeds([r["metrics"]["new"] for r in runs])
    hm = Stat(harmonic_mean(base.mean, new.mean), pstdev([r["metrics"]["hm"] for r in runs]), len(runs))
    return [base, new, hm]


def _base_to_new_panel(table: Table) -> Table:
    """The Average row, one row per method."""
    return Table("Base-to-new (average over datasets)", "method", list(B2N_METRICS),
                 list(_by_label(table, table.rows[-1][1]).items()))


def _by_label(table: Table, cells: list[Stat | None]) -> dict[str, list[Stat | None]]:
    """A row of the base-to-new table split by column label: each method's Base, New and HM cells."""
    n = len(B2N_METRICS)
    return {column.rsplit(" ", 1)[0]: cells[n * k:n * k + n] for k, column in enumerate(table.columns[::n])}


# ------------------------------------------------------------------ domain generalisation

def dg_tables(results: list[dict]) -> list[Table]:
    """Per dataset: rows = target domains and the Average, columns = method and shots. Then a summary:
    rows = method and shots, columns = datasets (each the average over its target domains)."""
    datasets = _ordered({r["dataset"] for r in results}, DG_DOMAINS)
    runs = _group(results, "dataset", "target", "name", "shots")
    tables, averages = [], defaultdict(dict)
    for dataset in datasets:
        own = [r for r in results if r["dataset"] == dataset]
        variants = _variants(own)
        targets = _ordered({r["target"] for r in own}, DG_DOMAINS.get(dataset, ()))
        rows = [(target, [_accuracy(runs.get((dataset, target, *v))) for v in variants]) for target in targets]
        average = _column_means(rows, expected=len(DG_DOMAINS.get(dataset, targets)))
        for variant, cell in zip(variants, average):
            averages[variant][dataset] = cell
        tables.append(Table(f"Domain generalisation: {dataset}", "target", [_variant_label(v) for v in variants],
                            rows + [("Average", average)], 1, _partial_note(average, "target domains")))
        if any("source" in r["metrics"] for r in own):
            tables.append(_held_out_gap_table(dataset, variants, targets, runs))
    summary = [(_variant_label(v), [averages[v].get(d) for d in datasets]) for v in _variants(results)]
    note = _partial_note([cell for _, cells in summary for cell in cells], "target domains")
    return tables + [Table("Domain generalisation (average over target domains)", "method", datasets, summary, 0, note)]


DG_GAP_COLUMNS = ("source domains", "held-out domain", "gap")


def _held_out_gap_table(dataset: str, variants: list[tuple[str, int]], targets: list[str],
                        runs: dict[tuple, list[dict]]) -> Table:
    """Rows = method and shots (those run with ``source_accuracy``); columns = accuracy on the source domains'
    test images, on the held-out domain, and the difference; each averaged over target domains."""
    rows = []
    for variant in variants:
        per_target = [runs[(dataset, t, *variant)] for t in targets if (dataset, t, *variant) in runs]
        pairs = [(fmean(r["metrics"]["source"] for r in group), fmean(r["metrics"]["accuracy"] for r in group))
                 for group in per_target if all("source" in r["metrics"] for r in group)]
        if pairs:
            covers = (len(pairs), len(DG_DOMAINS.get(dataset, targets)))
            rows.append((_variant_label(variant), [Stat(fmean(p[0] for p in pairs), covers=covers),
                                                   Stat(fmean(p[1] for p in pairs), covers=covers),
                                                   Stat(fmean(p[0] - p[1] for p in pairs), covers=covers)]))
    partial = _partial_note([cell for _, cells in rows for cell in cells], "target domains")
    return Table(f"Domain generalisation: {dataset}, source vs held-out domains", "method", list(DG_GAP_COLUMNS),
                 rows, 0, "; ".join(filter(None, ["each averaged over target domains; gap = source - held-out", partial])))


def _accuracies_only(gap_table: Table) -> Table:
    """The source vs held-out table without its gap column, to plot beside the accuracies."""
    return Table(gap_table.title, gap_table.stub, gap_table.columns[:2],
                 [(label, cells[:2]) for label, cells in gap_table.rows])


def _variants(results: list[dict]) -> list[tuple[str, int]]:
    """(name, shots) pairs, methods in the literature's order."""
    name_key = _name_key(results)
    return sorted({(r["name"], r["shots"]) for r in results}, key=lambda v: (*name_key(v[0]), v[1]))


def _variant_label(variant: tuple[str, int]) -> str:
    return f"{variant[0]} {variant[1]}-shot"


# ------------------------------------------------------------------ cross-dataset transfer

def xd_tables(results: list[dict]) -> list[Table]:
    """Per source: rows = methods; columns = the source, the targets and their average. The ImageNet
    variants get a table of their own (the literature's "domain generalisation" from ImageNet)."""
    tables = []
    for (source,), own in _group(results, "source").items():
        targets = {r["dataset"] for r in own} - {source}
        groups = (("Cross-dataset transfer", _ordered(targets - set(IMAGENET_VARIANTS), CROSS_DATASET_TARGETS)),
                  ("ImageNet variants", _ordered(targets & set(IMAGENET_VARIANTS), IMAGENET_VARIANTS)))
        expected = (len([t for t in CROSS_DATASET_TARGETS if t not in IMAGENET_VARIANTS and t != source]),
                    len(IMAGENET_VARIANTS))
        tables += [_xd_table(f"{title} from {source}", source, group, own, n)
                   for (title, group), n in zip(groups, expected) if group]
    return tables


def _xd_table(title: str, source: str, targets: list[str], results: list[dict], expected: int) -> Table:
    """Rows = methods; the Average is over the targets present, marked when the protocol has more."""
    runs = _group(results, "name", "dataset")
    rows = []
    for name in _names(results):
        cells = [_accuracy(runs.get((name, dataset))) for dataset in [source, *targets]]
        rows.append((name, cells + [_mean_cell(cells[1:], expected)]))
    note = _partial_note([cells[-1] for _, cells in rows], "target datasets")
    return Table(title + _shots_title(results), "method", [f"{source} (source)", *targets, "Average"], rows, 0, note)


# ------------------------------------------------------------------ shared

def _accuracy(runs: list[dict] | None) -> Stat | None:
    return over_seeds([r["metrics"]["accuracy"] for r in runs]) if runs else None


def _column_means(rows: list[tuple[str, list[Stat | None]]], expected: int | None = None) -> list[Stat | None]:
    """Per column, the mean of the row means present (None when the column is empty); with ``expected``, an
    average over fewer rows than that is marked partial."""
    return [_mean_cell(column, expected) for column in zip(*(cells for _, cells in rows))]


def _mean_cell(cells: Iterable[Stat | None], expected: int | None = None) -> Stat | None:
    """The mean of the cells present; with ``expected``, it records how many of how many it covers."""
    means = [cell.mean for cell in cells if cell is not None]
    if not means:
        return None
    return Stat(fmean(means), covers=(len(means), expected) if expected else None)


def _partial_note(cells: Iterable[Stat | None], parts: str) -> str:
    """The note a table with partial averages carries ('' when it has none)."""
    partial = [cell for cell in cells if cell is not None and cell.partial]
    if not partial:
        return ""
    return f"(k/n): an average over k of the protocol's n {parts} only; run the others for the published average"


def _group(results: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for result in results:
        groups[tuple(result.get(key) for key in keys)].append(result)
    return dict(groups)


def _ordered(values: Iterable[str], canonical: Iterable[str]) -> list[str]:
    """``values`` in the order of ``canonical``, then the others sorted."""
    values, canonical = set(values), list(canonical)
    return [v for v in canonical if v in values] + sorted(values - set(canonical))


def _name_key(results: list[dict]) -> Callable[[str], tuple[int, str]]:
    method_of = {r["name"]: r["method"] for r in results}

    def key(name: str) -> tuple[int, str]:
        method = method_of[name]
        return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), name)
    return key


def _names(results: list[dict]) -> list[str]:
    return sorted({r["name"] for r in results}, key=_name_key(results))


# ------------------------------------------------------------------ output

CI95 = "ci95"


def render(tables: list[Table], fmt: str = "md", std: bool | str = True) -> str:
    """The tables as Markdown, LaTeX, or one long-format CSV (table, row, column, mean, std, ci95, seeds, covers).
    ``std``: after each mean, ± the std over seeds (True), the half-width of its 95% confidence interval
    (``"ci95"``: 1.96 std / sqrt(seeds), as CoOp's parse_test_res.py --ci95), or nothing (False)."""
    if fmt not in FORMATS:
        raise MetapromptError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if fmt == "csv":
        return _csv(tables)
    renderer = _markdown if fmt == "md" else _latex
    return "\n".join(renderer(table, std) for table in tables)


def format_stat(cell: Stat | None, std: bool, plus_minus: str = " ± ", empty: str = "-", decimals: int = 2) -> str:
    if cell is None:
        return empty
    mean = round(cell.mean, decimals) + 0.0  # no "-0.00" for a gap that is zero up to rounding
    covered = f" ({cell.covers[0]}/{cell.covers[1]})" if cell.partial else ""
    if std and cell.std is not None and cell.seeds > 1:
        spread = ci95(cell) if std == CI95 else cell.std
        return f"{mean:.{decimals}f}{plus_minus}{spread:.{decimals}f}{covered}"
    return f"{mean:.{decimals}f}{covered}"


def ci95(cell: Stat) -> float:
    """Half the width of the mean's 95% confidence interval over seeds, as CoOp's parse_test_res.py computes it."""
    return 1.96 * cell.std / math.sqrt(cell.seeds)


def _markdown(table: Table, std: bool) -> str:
    lines = [f"### {table.title}", "", f"| {table.stub} | {' | '.join(table.columns)} |",
             "|---|" + "---:|" * len(table.columns)]
    lines += [f"| {label} | {' | '.join(format_stat(c, std, decimals=table.decimals) for c in cells)} |"
              for label, cells in table.rows]
    lines += ["", f"_{table.note}_"] if table.note else []
    return "\n".join(lines) + "\n"


def _latex(table: Table, std: bool) -> str:
    def row(label: str, cells: list[str]) -> str:
        return " & ".join([_tex(label), *cells]) + r" \\"

    body = [row(label, [format_stat(c, std, r" $\pm$ ", "--", table.decimals) for c in cells]) for label, cells in table.rows]
    if table.summary_rows:
        body.insert(len(body) - table.summary_rows, r"\midrule")
    header = row(table.stub, [_tex(c) for c in table.columns])
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(table.title)}}}",
             rf"\begin{{tabular}}{{l{'c' * len(table.columns)}}}", r"\toprule", header, r"\midrule", *body,
             r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {_tex(table.note)}"] if table.note else []
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def _tex(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace(DEPARTS, r"\textsuperscript{\dag}").replace("Δ", r"$\Delta$")  # pdflatex lacks Unicode Δ


def _csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "row", "column", "mean", "std", "seeds", "covers", "ci95"])
    for table in tables:
        for label, cells in table.rows:
            for column, cell in zip(table.columns, cells):
                if cell is not None:
                    writer.writerow([table.title, label, column, f"{cell.mean:.4f}",
                                     "" if cell.std is None else f"{cell.std:.4f}", cell.seeds or "",
                                     f"{cell.covers[0]}/{cell.covers[1]}" if cell.partial else "",
                                     f"{ci95(cell):.4f}" if cell.std is not None and cell.seeds > 1 else ""])
    return buffer.getvalue()


def save_figure(panels: list[Table], path: str | Path) -> Path:
    """One grouped bar chart per panel, stacked, as a PNG (matplotlib's Agg renderer: no display needed)."""
    from matplotlib.figure import Figure

    path = Path(path)
    width = max(6.0, 0.9 * max(len(p.columns) for p in panels) + 2)
    fig = Figure(figsize=(width, 3.6 * len(panels)), layout="constrained")
    for ax, panel in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        (_lines if panel.plot == "lines" else _bars)(ax, panel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _lines(ax, panel: Table) -> None:
    """Accuracy against the columns (shot counts), a line per row (method), the spread over seeds shaded."""
    x = list(range(len(panel.columns)))
    for label, cells in panel.rows:
        means = [float("nan") if c is None else c.mean for c in cells]
        spread = [0.0 if c is None or c.std is None else c.std for c in cells]
        (line,) = ax.plot(x, means, marker="o", label=label)
        if any(spread):
            ax.fill_between(x, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                            color=line.get_color(), alpha=0.2)
    ax.set_xticks(x, panel.columns)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(panel.title)
    ax.legend(fontsize="small", ncols=min(len(panel.rows), 4))


def _bars(ax, panel: Table) -> None:
    width = 0.8 / max(len(panel.rows), 1)
    for i, (label, cells) in enumerate(panel.rows):
        x = [j + (i - (len(panel.rows) - 1) / 2) * width for j in range(len(panel.columns))]
        heights = [float("nan") if c is None else c.mean for c in cells]
        errors = [0.0 if c is None or c.std is None else c.std for c in cells]
        ax.bar(x, heights, width, yerr=errors if any(errors) else None, capsize=2, label=label)
    crowded = len(panel.columns) > 4
    ax.set_xticks(range(len(panel.columns)), panel.columns, rotation=20 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    partial = [f"{label} {cell.covers[0]}/{cell.covers[1]}" for label, cells in panel.rows for cell in cells
               if cell is not None and cell.partial]
    ax.set_title(panel.title + (f"\npartial averages: {', '.join(sorted(set(partial)))}" if partial else ""))
    ax.legend(fontsize="small", ncols=min(len(panel.rows), 4))
