"""Several `metaprompt run` workers on one sweep (leases): every run done exactly once, the tables of one
worker alone, a killed worker's run finished by another; conflicting sweeps refused; lease takeover rules."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaprompt.cli import main
from metaprompt.errors import MetapromptError
from metaprompt.leases import Claim, Holder, Leases, this_host
from metaprompt.world import render_world

SEEDS = ["1", "2", "3", "4", "5", "6"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    render_world(root / "world", seed=0, train_per_class=2, test_per_class=2, val_per_class=1, progress=False)
    return root


def sweep_args(root: Path, out: Path, *extra: str) -> list[str]:
    """CoOp's world preset over 6 seeds, long enough per run (8 epochs) for a kill to land inside one."""
    return ["run", "base2new", "--preset", "world_coop_b2n", "--root", str(root), "--datasets", "world",
            "--seeds", *SEEDS, "--out", str(out), "--no-progress", "--workers", "0", "--set", "shots=2",
            "--set", "epochs=8", *extra]


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metaprompt", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_a_worker_mid_run(out: Path, workers: list[subprocess.Popen], deadline: float) -> tuple[int, Path]:
    """SIGKILL the worker holding a run that has checkpointed (mid-run, not finished). Its pid and run."""
    pids = {w.pid: w for w in workers}
    leases = out / ".sweep" / "leases"
    while time.monotonic() < deadline:
        for lease in leases.glob("*.json") if leases.is_dir() else []:
            try:
                holder = json.loads(lease.read_text())
            except (OSError, ValueError):
                continue
            folder = out / Path(*lease.stem.split("__"))
            if holder["pid"] in pids and (folder / "checkpoint.pt").is_file() \
                    and not (folder / "prompts.safetensors").is_file():
                pids[holder["pid"]].send_signal(signal.SIGKILL)
                return holder["pid"], folder
        time.sleep(0.005)
    raise AssertionError("no worker was seen in the middle of a run")


def test_three_workers_finish_one_sweep_together_and_take_over_a_killed_one(root, tmp_path):
    out = tmp_path / "workers"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    # no heartbeat timeout within the test: the killed worker's run is taken over because its pid is gone
    workers = [start(sweep_args(root, out, "--lease-timeout", "3600"), log) for log in logs]
    try:
        killed_pid, killed_run = kill_a_worker_mid_run(out, workers, time.monotonic() + 240)
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert sorted(codes) == [-signal.SIGKILL, 0, 0], codes
    texts = [log.read_text() for log in logs]
    labels = [f"base2new coop world seed {seed}" for seed in SEEDS]
    for label in labels:  # each run done exactly once over all workers
        assert sum(f"] {label}: done in" in line for t in texts for line in t.splitlines()) == 1, (label, texts)
    seed = killed_run.name.removeprefix("seed")
    assert any(f"base2new coop world seed {seed}: taken over from {this_host()}:{killed_pid}" in t for t in texts)

    single = tmp_path / "single"
    done = subprocess.run([sys.executable, "-m", "metaprompt", *sweep_args(root, single)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    for s in SEEDS:  # the same numbers, the interrupted and resumed run's too
        ours = json.loads((out / f"base2new/coop/world/seed{s}/result.json").read_text())
        theirs = json.loads((single / f"base2new/coop/world/seed{s}/result.json").read_text())
        assert ours["metrics"] == theirs["metrics"], s
    def summary(text: str) -> str:
        return text[text.index("sweep finished:"):]

    def accuracy_tables(text: str) -> str:  # the cost table holds wall times, which differ between sweeps
        return summary(text)[:summary(text).index("### Cost per run")]

    survivors = [summary(t) for t, code in zip(texts, codes) if code == 0]
    assert survivors[0] == survivors[1]  # every worker prints the same summary, costs included
    assert accuracy_tables(survivors[0]) == accuracy_tables(done.stdout)


def test_a_sweep_with_other_settings_in_the_same_folder_is_refused_naming_the_folder(root, tmp_path, capsys):
    out = tmp_path / "out"
    fast = ["--set", "max_steps=1", "--seeds", "1"]
    assert main([*sweep_args(root, out), *fast]) == 0
    capsys.readouterr()
    assert main([*sweep_args(root, out), *fast, "--set", "lr=0.01"]) == 2
    err = capsys.readouterr().err
    folder = out / "base2new" / "coop" / "world" / "seed1"
    assert f"{folder} holds a run with other settings" in err and "train.lr is 0.05 there, 0.01 in this" in err
    assert main([*sweep_args(root, out), *fast, "--seeds", "1", "2", "--workers", "1"]) == 0  # more seeds: the same sweep
    # another name keeps both apart, in the same --out
    assert main([*sweep_args(root, out), *fast, "--set", "lr=0.01", "--name", "coop_lr001"]) == 0


def test_the_documented_loops_run_in_one_out_folder(root, tmp_path, capsys):
    """Other shots, other datasets, other protocols: other run folders, never refused (README's DG loop)."""
    out = tmp_path / "out"
    fast = ["--preset", "world_coop_dg", "--set", "max_steps=1", "--seeds", "1", "--targets", "photo",
            "--root", str(root), "--out", str(out), "--no-progress", "--workers", "0"]
    for shots in ("1", "2"):
        assert main(["run", "dg", "--method", "coop", "--dataset", "world_dg", "--shots", shots, *fast]) == 0
    assert (out / "dg/coop/world_dg/shots1/photo/seed1/result.json").is_file()
    assert (out / "dg/coop/world_dg/shots2/photo/seed1/result.json").is_file()


def test_a_failed_sweep_leaves_nothing_that_blocks_its_corrected_retry(root, tmp_path, capsys):
    out = tmp_path / "out"
    fast = ["--set", "max_steps=1", "--seeds", "1"]
    assert main([*sweep_args(root, out), *fast, "--pretrained", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert not (out / "base2new" / "coop" / "world" / "seed1").exists()
    assert main([*sweep_args(root, out), *fast]) == 0


def test_a_seed_given_twice_is_refused_not_counted_twice(root, tmp_path, capsys):
    assert main([*sweep_args(root, tmp_path / "out"), "--seeds", "1", "1"]) == 2
    assert "base2new coop world seed 1 is asked for twice" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_written_is_one_line(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    original = Path.mkdir

    def read_only(self, *args, **kwargs):
        if out in (self, *self.parents):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main([*sweep_args(root, out), "--set", "max_steps=1"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt:")]
    assert lines == [f"metaprompt: error: cannot write to the output folder {out} (Permission denied); "
                     "expected a folder this process can write to"]


# ------------------------------------------------------------------ the lease rules, one at a time

def test_a_live_lease_is_respected_and_a_dead_or_silent_one_taken_over(tmp_path):
    leases = Leases(tmp_path, stale_after=60)
    run = tmp_path / "base2new" / "coop" / "world" / "seed1"
    claim = leases.claim(run)
    assert isinstance(claim, Claim) and claim.taken_from is None
    assert leases.claim(run) == claim.holder  # held by a live process: not claimable
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Holder(this_host(), gone.pid, time.time(), time.time(), "dead")
    leases._write(run, dead)
    taken = leases.claim(run)
    assert isinstance(taken, Claim) and taken.taken_from == dead  # same host, pid not alive
    silent = Holder("another-host", 1, time.time() - 120, time.time() - 61, "silent")
    leases._write(run, silent)
    assert isinstance(leases.claim(run), Claim)  # another host, no heartbeat for longer than stale_after
    talking = Holder("another-host", 1, time.time() - 120, time.time() - 5, "talking")
    leases._write(run, talking)
    assert leases.claim(run) == talking


def test_a_held_lease_is_refreshed_and_released_but_never_the_next_holders(tmp_path):
    leases = Leases(tmp_path, stale_after=60, heartbeat=0.01)
    run = tmp_path / "seed1"
    claim = leases.claim(run)
    with claim:
        first = leases.holder(run).heartbeat
        time.sleep(0.1)
        assert leases.holder(run).heartbeat > first
    assert leases.holder(run) is None
    old = leases.claim(run)
    leases._write(run, Holder("another-host", 1, 0, time.time(), "new holder"))
    old.release()
    assert leases.holder(run).token == "new holder"


def test_a_lock_another_worker_never_releases_is_a_clear_error(tmp_path):
    """Held here; a second process waits for it past its timeout and stops with a line saying why."""
    code = ("import sys; import metaprompt.leases as m; m.LOCK_TIMEOUT_SECONDS = 0.2\n"
            "try:\n    m.Leases(sys.argv[1]).locked()\nexcept m.MetapromptError as e:\n    print(e); sys.exit(3)")
    with Leases(tmp_path).locked():
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "held by another worker for over 0.2 s" in done.stdout and "leases.lock" in done.stdout


def test_gpus_starts_one_worker_per_listed_gpu_and_prints_one_summary(root, tmp_path, capsys, monkeypatch):
    """--gpus 0,1 on a machine said to have 2 GPUs: two workers (here on the CPU: the test machine has none,
    so each sees no GPU under its CUDA_VISIBLE_DEVICES) share the sweep; the summary is printed once."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    assert main([*sweep_args(root, out), "--set", "max_steps=2", "--gpus", "0,1"]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("sweep finished: 6 runs") == 1 and "| world |" in printed.out
    logs = [out / ".sweep" / "workers" / f"gpu{gpu}.log" for gpu in (0, 1)]
    assert all(f"log {log}" in printed.err for log in logs)
    done = [line for log in logs for line in log.read_text().splitlines() if ": done in" in line]
    assert sorted(line.split("] ", 1)[1].split(":")[0] for line in done) == \
        [f"base2new coop world seed {seed}" for seed in SEEDS]


@pytest.mark.parametrize("gpus, device, message", [
    ("0,0", None, "--gpus 0,0: expected distinct GPU indices"),
    ("a", None, "--gpus a: expected GPU indices separated by commas"),
    ("2", None, "--gpus 2: this machine shows 2 CUDA device(s), 0 to 1"),
    ("0", "cpu", "--gpus with --device cpu: each worker runs on the one GPU it is given"),
])
def test_gpus_refuses_what_it_cannot_start(gpus, device, message, root, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    extra = ["--device", device] if device else []
    assert main([*sweep_args(root, tmp_path / "out"), "--gpus", gpus, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_worker_launched_by_torchrun_runs_each_claimed_run_on_all_its_processes(root, tmp_path):
    """Two processes (gloo) are one worker: rank 0 claims, both train every run together, each run once."""
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "metaprompt"]
    done = subprocess.run([*launch, *sweep_args(root, out), "--seeds", "1", "2", "--set", "max_steps=2",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(": done in") == 2 and done.stdout.count("sweep finished: 2 runs") == 1
    for seed in (1, 2):
        result = json.loads((out / f"base2new/coop/world/seed{seed}/result.json").read_text())
        assert result["environment"]["processes"] == 2
    assert not list((out / ".sweep" / "leases").glob("*.json"))  # every lease released
