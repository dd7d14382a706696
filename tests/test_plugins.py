"""A third-party package registers a method and a dataset with domains through entry points (issue 21, item 5):
a temporary distribution on PYTHONPATH, as `pip install` would leave it, then the CLI trains its method, runs DG
on its dataset (named in folders and tables) and checks its data. docs/extending.md shows the same plugin."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import one_thread_env

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
PLUGIN = re.search(r"```python\n(.*?)```", DOC.read_text(), flags=re.S).group(1)
"""The plugin module, as docs/extending.md shows it."""
ENTRY_POINTS = """
[metaprompt.methods]
short_coop = shapes_plugin:ShortCoOp

[metaprompt.datasets]
shapes = shapes_plugin:read_shapes
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The plugin as an installed distribution (module + dist-info with its entry points) on PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    (site / "shapes_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "shapes_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shapes-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return {**one_thread_env(), "PYTHONPATH": str(site)}


def metaprompt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metaprompt", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_plugins_method_and_dataset_train_run_dg_and_report_by_their_names(installed, world_root, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shapes").symlink_to(world_root / "world", target_is_directory=True)
    root, out = tmp_path / "data", tmp_path / "out"
    checked = metaprompt(installed, "data", "check", "--root", str(root), "--dataset", "shapes")
    assert checked.returncode == 0 and "shapes" in checked.stdout, checked.stdout + checked.stderr
    trained = metaprompt(installed, "train", "--method", "short_coop", "--model", "world-tiny", "--dataset", "shapes",
                         "--root", str(root), "--classes", "base", "--out", str(tmp_path / "run"),
                         "--set", "max_steps=1", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert "method: short_coop" in (tmp_path / "run" / "config.yaml").read_text()
    assert "n_ctx: 2" in (tmp_path / "run" / "config.yaml").read_text()  # the plugin's own defaults
    dg = metaprompt(installed, "run", "dg", "--method", "short_coop", "--model", "world-tiny", "--dataset", "shapes",
                    "--shots", "1", "--seeds", "1", "--root", str(root), "--out", str(out), "--set", "max_steps=1",
                    "--no-progress")
    assert dg.returncode == 0, dg.stderr
    for target in ("photo", "sketch"):
        assert (out / "dg" / "short_coop" / "shapes" / "shots1" / target / "seed1" / "result.json").is_file()
    report = metaprompt(installed, "report", str(out), "--figure", str(tmp_path / "f.png"))
    assert "### Domain generalisation: shapes" in report.stdout and "short_coop 1-shot" in report.stdout


def test_without_the_plugin_its_names_are_unknown_and_a_broken_plugin_is_one_line(installed, tmp_path):
    unknown = metaprompt(one_thread_env(), "config", "--method", "short_coop")
    assert unknown.returncode == 2 and "unknown method 'short_coop'" in unknown.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    info = broken / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[metaprompt.methods]\nbroken = no_such_module:Method\n")
    failed = metaprompt({**installed, "PYTHONPATH": str(broken)}, "config", "--method", "broken")
    assert failed.returncode == 2
    assert "method plugin 'broken' (no_such_module:Method) could not be loaded: ModuleNotFoundError" in failed.stderr
