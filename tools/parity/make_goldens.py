"""Regenerate the parity goldens from checkouts of the reference repositories (see tools/parity/README.md).

    python tools/parity/make_goldens.py --refs REFS

REFS holds checkouts named CoOp, Dassl.pytorch, multimodal-prompt-learning and 2024-TIP-MetaPrompt. The
released code is imported from there and run, one repository per process; nothing of it is copied into
this project. Writes, under tests/:

- fixtures/tiny_openai_clip.pt.gz, .json: the fixture CLIP (fixture_worker.py);
- goldens/inputs.safetensors: the fixed images;
- goldens/<case>.safetensors: logits and trained tensors per case of cases.py (reference_worker.py);
- goldens/dassl/<case>/: per trained case, the checkpoint the released trainer's own save_model wrote after
  training (``<learner>/model.pth.tar-1``, frozen CLIP weights left out) and the trained model's eval logits
  (``released_logits.safetensors``), for ``metaprompt import`` (reference_worker.py);
- goldens/lr_schedules.json: Dassl's LR of every epoch of every shipped preset (schedule_worker.py);
- goldens/released_configs.json: the values of every released config file a preset follows, read by Dassl's
  config loader with the repository's extend_cfg, and Dassl's LR of each of their epochs;
- goldens/fewshot_draws.json: the few-shot sets CoOp's reader + Dassl's generate_fewshot_dataset and the
  released MetaPrompt DG readers draw on miniature layouts (fewshot_worker.py);
- goldens/MANIFEST.json: this command, the reference commits and the torch version that made them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import cases as case_table  # noqa: E402

DASSL = "Dassl.pytorch"
FIXTURES, GOLDENS = ROOT / "tests" / "fixtures", ROOT / "tests" / "goldens"
IMAGE_SEED = 0


def commit(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def write_inputs(path: Path) -> None:
    """Fixed images: normal noise at 28 px (upsampled 8x by both sides)."""
    generator = torch.Generator().manual_seed(IMAGE_SEED)
    shape = (case_table.N_IMAGES, 3, case_table.LOW_RES, case_table.LOW_RES)
    save_file({"images": torch.randn(shape, generator=generator)}, str(path))


def run(worker: str, *args: str) -> None:
    command = [sys.executable, str(HERE / worker), *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=tempfile.gettempdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True, help="folder holding the reference checkouts")
    parser.add_argument("--cases", nargs="+", default=list(case_table.CASES), help="cases to (re)make")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fixture", "cases", "schedules", "fewshot", "lpclip"],
                        help="parts not to remake")
    args = parser.parse_args()
    refs = args.refs.resolve()
    needed = [DASSL, *case_table.REPOSITORIES.values()]
    missing = [name for name in needed if not (refs / name).is_dir()]
    if missing:
        raise SystemExit(f"{refs}: missing checkouts {missing} (expected {needed})")
    dassl = refs / DASSL
    GOLDENS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    fixture = work / "tiny_openai_clip.pt"
    coop = refs / case_table.REPOSITORIES[case_table.COOP]
    if "fixture" in args.skip:
        import gzip
        import shutil

        with gzip.open(FIXTURES / "tiny_openai_clip.pt.gz", "rb") as src, open(fixture, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        run("fixture_worker.py", "--repo", str(coop), "--dassl", str(dassl), "--out", str(FIXTURES), "--work", str(work))
    inputs = GOLDENS / "inputs.safetensors"
    write_inputs(inputs)
    followed = followed_configs()
    released: dict[str, dict] = {}
    for repo, folder in case_table.REPOSITORIES.items():
        names = [n for n in args.cases if case_table.CASES[n]["repo"] == repo] if "cases" not in args.skip else []
        root = case_table.CODE_ROOTS.get(repo, "")
        code = refs / folder / root
        repo_dassl = refs / folder / case_table.OWN_DASSL[repo] if repo in case_table.OWN_DASSL else dassl
        wanted = {key: str(Path(path).relative_to(root)) if root else path
                  for key, (owner, path) in followed.items() if owner == repo}
        wanted_file, values_file = work / f"wanted-{folder}.json", work / f"released-{folder}.json"
        wanted_file.write_text(json.dumps(wanted))
        run("reference_worker.py", "--repo", str(code), "--dassl", str(repo_dassl), "--fixture",
            str(fixture), "--inputs", str(inputs), "--out", str(GOLDENS), "--checkpoints", str(GOLDENS / "dassl"),
            "--released-configs", str(wanted_file), str(values_file), *names)
        released |= {key: {**value, "follows": followed[key][1]}
                     for key, value in json.loads(values_file.read_text()).items()}
    (GOLDENS / "released_configs.json").write_text(json.dumps(released, indent=1, sort_keys=True) + "\n")
    if "schedules" not in args.skip:
        schedules = work / "schedules.json"
        schedules.write_text(json.dumps(preset_schedules()))
        run("schedule_worker.py", "--dassl", str(dassl), "--schedules", str(schedules),
            "--out", str(GOLDENS / "lr_schedules.json"))
    if "lpclip" not in args.skip:
        run("lpclip_worker.py", "--repo", str(coop), "--work", str(work / "lpclip"),
            "--out", str(GOLDENS / "lpclip" / "linear_probe.safetensors"))
    if "fewshot" not in args.skip:
        draws = {}
        for part, repo in (("coop", case_table.COOP), ("dg", case_table.META)):
            path = work / f"fewshot-{part}.json"
            run("fewshot_worker.py", part, "--repo", str(refs / case_table.REPOSITORIES[repo]), "--dassl", str(dassl),
                "--out", str(path))
            draws[part] = json.loads(path.read_text())
        (GOLDENS / "fewshot_draws.json").write_text(json.dumps(draws, indent=1) + "\n")
    manifest = {
        "command": "python tools/parity/make_goldens.py --refs REFS",
        "created": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "references": {repo: commit(refs / folder) for repo, folder in
                       {**case_table.REPOSITORIES, "KaiyangZhou/Dassl.pytorch": DASSL}.items()},
        "cases": sorted(case_table.CASES),
    }
    (GOLDENS / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"goldens written to {GOLDENS}")


def preset_configs() -> dict:
    """Every shipped preset and each of its variants, keyed ``preset`` / ``preset@<variant index>``."""
    from metaprompt.config import preset_names, resolve

    configs = {}
    for name in preset_names():
        base = resolve(preset=name)
        configs[name] = base
        configs |= {f"{name}@{i}": _with(base, v) for i, v in enumerate(base.variants)}
    return configs


def followed_configs() -> dict[str, tuple[str, str]]:
    """preset key -> (reference repository, config file path) of every preset that follows a released file."""
    followed = {}
    for key, cfg in preset_configs().items():
        if cfg.follows:
            owner, path = cfg.follows.split(" ", 1)
            followed[key] = (owner, path)
    return followed


def preset_schedules() -> dict[str, dict]:
    """Every shipped preset (and each of its variants): the optimisation settings Dassl's scheduler takes."""
    return {key: {"lr": cfg.train.lr, "epochs": cfg.train.epochs, "warmup_epochs": cfg.train.warmup_epochs,
                  "warmup_lr": cfg.train.warmup_lr} for key, cfg in preset_configs().items()}


def _with(cfg, variant):
    """``cfg`` with a variant's values and the file it follows."""
    import dataclasses

    return dataclasses.replace(cfg.with_values(variant.values, user=False), follows=variant.follows)


if __name__ == "__main__":
    main()
