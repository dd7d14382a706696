"""Executable docs: every ```bash block of README.md and docs/*.md runs, as written, on miniature copies of the
datasets' layouts and a tiny model, or says in the doc why it cannot run offline.

A block is run by bash, with ``metaprompt`` recording each command line instead of running it; the recorded
commands then run in this process, in order (one process: no torch start-up per command). The only changes
made to them are those that running offline needs, and none changes what a command means:

- ``$DATA`` (and the docs' ``/path/to/data``) is a data root holding miniature copies of every dataset's layout;
- the published presets' ViT-B/16 weights are the tiny test model (``--model``/``--pretrained`` appended), and
  commands that load an artifact trained on them name its weights file (``--pretrained``);
- training is shortened (``--set epochs=1 --set max_steps=1``, one seed, the few-shot protocol's first shot
  count) and the world is rendered small.

A block marked ``<!-- doc-test: skip: REASON -->`` on the line before it is not run (the reason is required);
``<!-- doc-test: before: COMMAND -->`` runs COMMAND first (what the block assumes was done before it).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metaprompt.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- doc-test: (?P<kind>skip|before): (?P<text>.*?) -->\n)?```bash\n(?P<body>.*?)```", re.S)
RECORDER = 'metaprompt() { "$PYTHON" -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" >> "$RECORD"; }\n'


def blocks(path: Path) -> list[tuple[int, str, str | None, str | None]]:
    """(line, body, skip reason, command to run before) of each bash block of ``path``."""
    text = path.read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text[:match.start("body")].count("\n") + 1
        kind, note = match.group("kind"), match.group("text")
        found.append((line, match.group("body"), note if kind == "skip" else None, note if kind == "before" else None))
    return found


def test_every_bash_block_runs_or_says_why_not():
    counted = 0
    for path in DOCS:
        fences = path.read_text().count("```bash\n")
        assert len(blocks(path)) == fences, f"{path}: a bash block the doc test cannot read"
        for line, _, skip, _ in blocks(path):
            assert skip is None or skip.strip(), f"{path}:{line}: a skipped block must say why"
            counted += skip is None
    assert counted >= 10  # the docs' runnable commands are run below


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from data_layouts import make_all

    return make_all(tmp_path_factory.mktemp("DATA"), world=False)  # the docs render the world themselves


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> tuple[str, str]:
    """A tiny CLIP as deep as ViT-B/16 (12 blocks per tower), so that the published prompt depths fit."""
    from helpers import TINY_CONFIG, tiny_checkpoint

    config = {**TINY_CONFIG, "vision_cfg": {**TINY_CONFIG["vision_cfg"], "layers": 12, "width": 32, "head_width": 16},
              "text_cfg": {**TINY_CONFIG["text_cfg"], "layers": 12, "width": 32}}
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("models") / "tiny-deep.json"
    path.write_text(json.dumps(config))
    weights = tiny_checkpoint(path)
    fast = weights.with_suffix(".safetensors")  # read faster than a pickled state dict, once per run
    save_file({k: v.contiguous() for k, v in torch.load(weights, weights_only=True).items()}, str(fast))
    return str(path), str(fast)


def offline(argv: list[str], model: tuple[str, str]) -> list[str]:
    """``argv`` as it runs here (see the module docstring)."""
    command = argv[0]
    if "--model" in argv and argv[argv.index("--model") + 1] == "world-tiny":
        tiny = []
    else:
        tiny = ["--model", model[0], "--pretrained", model[1]]
    short = ["--set", "epochs=1", "--set", "max_steps=1", "--no-progress", "--workers", "0"]
    if command == "train":
        return [*argv, *tiny, *short]
    if command == "run":
        extra = ["--shots", "1"] if argv[1] == "fewshot" else []
        return [*argv, *tiny, *short, "--seeds", "1", *extra]
    if command in ("eval", "predict", "export"):
        return [*argv, "--model", model[0], "--pretrained", model[1],
                *(["--no-progress", "--workers", "0"] if command == "eval" else [])]
    if argv[:2] == ["world", "render"]:
        return [*argv, "--train-per-class", "2", "--test-per-class", "2", "--val-per-class", "1"]
    return argv


def recorded(path: Path, cwd: Path, root: Path, record: Path) -> list[tuple[int, list[str]]]:
    """(the block's line, the command) of every command the doc's runnable blocks give, run by bash in one
    session (as a reader runs them: variables set in one block hold in the next)."""
    script = RECORDER
    for line, body, skip, before in blocks(path):
        if skip is None:
            script += f'echo \'{{"block": {line}}}\' >> "$RECORD"\n' + (before or "") + "\n" + body + "\n"
    env = {**os.environ, "DATA": str(root), "PYTHON": sys.executable, "RECORD": str(record)}
    record.write_text("")
    done = subprocess.run(["bash", "-c", script.replace("/path/to/data", str(root))], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{path}: {done.stderr}"
    commands, block = [], 0
    for entry in map(json.loads, record.read_text().splitlines()):
        if isinstance(entry, dict):
            block = entry["block"]
        else:
            commands.append((block, entry))
    return commands


def test_every_runnable_command_of_the_docs_runs(data, deep_model, tmp_path, capsys):
    from data_layouts import write_image

    work = tmp_path / "work"
    work.mkdir()
    for name in ("img1.jpg", "img2.jpg"):  # the README's predict example classifies these
        write_image(work / name)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        ran = 0
        for path in DOCS:
            for line, argv in recorded(path, work, data, tmp_path / "record"):
                code = main(offline(argv, deep_model))
                err = capsys.readouterr().err
                assert code == 0, f"{path.name}:{line}: `metaprompt {' '.join(argv)}` exited {code}: {err}"
                ran += 1
    finally:
        os.chdir(cwd)
    assert ran >= 30
