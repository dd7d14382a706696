"""What the frozen-feature store and several workers save on a whole sweep, side by side.

A base-to-new sweep of zero-shot CLIP, CoOp, IVLP and MetaPrompt over 3 seeds (12 runs), four ways:

- 1 worker, store off (``--no-feature-store``: every run encodes its test images again);
- 1 worker, store on (the default);
- 2 and 4 workers on the same sweep, store on (``metaprompt run`` started 2 or 4 times with the same
  arguments, as ``--gpus`` or a SLURM array would).

For each: wall time, the images put through the image encoder (all, and those of test evaluations), and
whether the result tables equal the first configuration's, number for number.

    python benchmarks/bench_sweep.py                        # the offline world, its tiny CLIP, on this machine
    python benchmarks/bench_sweep.py --max-steps 20         # shorter runs (minutes on 2 CPU cores)
    python benchmarks/bench_sweep.py --model ViT-B-16       # published sizes, random weights (saved to a file,
                                                            # so the store can key them), one GPU per worker

Each worker is a process of its own that counts what its image encoder is given (this script wraps the
library's ``PromptCLIP.encode_image`` and its evaluation loader in that process; the library has no hook).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("zeroshot", "coop", "ivlp", "metaprompt")
SEEDS = ("1", "2", "3")
CONFIGURATIONS = (("1 worker, store off", 1, False), ("1 worker, store on", 1, True),
                  ("2 workers, store on", 2, True), ("4 workers, store on", 4, True))


def worker(counts: Path, sweeps: list[list[str]]) -> int:
    """One worker: every sweep in turn, counting the images its image encoder and its evaluations see."""
    import metaprompt.evaluation as evaluation
    from metaprompt.cli import main
    from metaprompt.clip import PromptCLIP

    seen = {"encoded": 0, "test_encoded": 0}
    encode_image, decoded_batches = PromptCLIP.encode_image, evaluation._decoded_batches

    def counting_encode(self, images, prompts=None):
        seen["encoded"] += images.shape[0]
        return encode_image(self, images, prompts)

    def counting_batches(*args, **kwargs):
        for images, labels, skipped in decoded_batches(*args, **kwargs):
            seen["test_encoded"] += 0 if images is None else images.shape[0]
            yield images, labels, skipped

    PromptCLIP.encode_image, evaluation._decoded_batches = counting_encode, counting_batches
    code = 0
    for argv in sweeps:
        code = code or main(argv)
    counts.write_text(json.dumps(seen))
    return code


def sweep_commands(data: Path, out: Path, model: str, pretrained: str | None, max_steps: int,
                   store: bool) -> list[list[str]]:
    commands = []
    for method in METHODS:
        config = ["--preset", f"world_{method}_b2n"] if model == "world-tiny" else \
            ["--method", method, "--model", model, "--pretrained", pretrained]  # the published preset
        argv = ["run", "base2new", *config, "--root", str(data), "--datasets", "world", "--seeds", *SEEDS,
                "--out", str(out), "--no-progress"]
        if max_steps:
            argv += ["--set", f"max_steps={max_steps}"]
        if not store:
            argv.append("--no-feature-store")
        commands.append(argv)
    return commands


def run_configuration(n: int, store: bool, data: Path, out: Path, args, gpus: list[str]) -> dict:
    sweeps = sweep_commands(data, out, args.model, args.pretrained, args.max_steps, store)
    procs = []
    start = time.perf_counter()
    for i in range(n):
        counts = out.parent / f"{out.name}-counts{i}.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // n))}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        log = (out.parent / f"{out.name}-worker{i}.log").open("w")
        procs.append((counts, subprocess.Popen([sys.executable, __file__, "--worker", str(counts), json.dumps(sweeps)],
                                               stdout=log, stderr=subprocess.STDOUT, env=env)))
    codes = [p.wait() for _, p in procs]
    wall = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes}); see {out.parent}/*-worker*.log")
    seen = [json.loads(c.read_text()) for c, _ in procs]
    results = {str(p.parent.relative_to(out)): json.loads(p.read_text())["metrics"]
               for p in sorted(out.rglob("result.json"))}
    return {"wall": wall, "encoded": sum(s["encoded"] for s in seen),
            "test_encoded": sum(s["test_encoded"] for s in seen), "results": results}


def prepare(work: Path, args) -> Path:
    """The world to sweep over, and (for an open_clip model) its random weights in a file."""
    from metaprompt.world import render_world

    data = work / "data"
    render_world(data / "world", seed=0, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                 val_per_class=1, progress=False, processes=min(4, args.threads))
    if args.model != "world-tiny" and args.pretrained is None:
        import open_clip
        import torch

        torch.manual_seed(0)
        model = open_clip.create_model(args.model, pretrained=None)
        args.pretrained = str(work / f"{args.model}-random.pt")
        torch.save(model.state_dict(), args.pretrained)
    return data


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), json.loads(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="world-tiny", help="world-tiny (default), or an open_clip name (random weights)")
    p.add_argument("--pretrained", default=None, help="weights file for --model (default: random, saved to a file)")
    p.add_argument("--max-steps", type=int, default=0, help="training steps per run (default 0: the presets' all)")
    p.add_argument("--train-per-class", type=int, default=8, help="world images per class to render (train)")
    p.add_argument("--test-per-class", type=int, default=25, help="world images per class to render (test)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU threads shared by the workers of a configuration")
    p.add_argument("--gpus", default=None, help="GPUs the workers take in turn (default: CUDA_VISIBLE_DEVICES' or none)")
    args = p.parse_args()
    gpus = (args.gpus or os.environ.get("CUDA_VISIBLE_DEVICES", "")).split(",")
    gpus = [g for g in gpus if g.strip()]
    with tempfile.TemporaryDirectory(prefix="metaprompt-bench-sweep-") as tmp:
        work = Path(tmp)
        data = prepare(work, args)
        rows = []
        for name, n, store in CONFIGURATIONS:
            measured = run_configuration(n, store, data, work / name.replace(" ", "-").replace(",", ""), args, gpus)
            rows.append((name, measured))
            print(f"{name}: {measured['wall']:.0f} s", file=sys.stderr, flush=True)
    reference = rows[0][1]["results"]
    runs = len(reference)
    print(f"base-to-new sweep on the offline world: {', '.join(METHODS)} x seeds {' '.join(SEEDS)} = {runs} runs; "
          f"model {args.model}{' (random weights)' if args.model != 'world-tiny' else ''}; "
          f"{'max_steps ' + str(args.max_steps) if args.max_steps else 'full presets'}; "
          f"{args.threads} CPU threads{', GPUs ' + ','.join(gpus) if gpus else ''}")
    print(f"{'configuration':<22}{'wall (s)':>10}{'images encoded':>16}{'test images encoded':>21}"
          f"{'  results equal the first':>26}")
    for name, m in rows:
        same = "yes" if m["results"] == reference else "NO"
        print(f"{name:<22}{m['wall']:>10.1f}{m['encoded']:>16}{m['test_encoded']:>21}{same:>26}")
    return 0 if all(m["results"] == reference for _, m in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
