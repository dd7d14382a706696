"""Sweep workers started by the engines (issue 22): SLURM through submitit (its local executor here, since no
SLURM exists on this machine) and a local Ray cluster. Every run is done exactly once, the tables are those of a
single process, a killed Ray worker is started again and its run taken over, and the sbatch text holds the
options given."""
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

SEEDS = ["1", "2", "3", "4", "5", "6"]


def sweep_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "base2new", "--method", "coop", "--model", "world-tiny", "--datasets", "world", "--seeds", *SEEDS,
            "--root", str(root), "--out", str(out), "--no-progress", "--workers", "0", "--set", "shots=2",
            "--set", "epochs=8", *extra]  # 8 epochs: long enough for a kill to land inside a run


def results(out: Path) -> dict[str, dict]:
    return {seed: json.loads((out / f"base2new/coop/world/seed{seed}/result.json").read_text())["metrics"]
            for seed in SEEDS}


@pytest.fixture(scope="module")
def single(world_root, tmp_path_factory) -> dict[str, dict]:
    """The sweep's results from one process, to compare every launcher's with."""
    out = tmp_path_factory.mktemp("single")
    assert main(sweep_args(world_root, out)) == 0
    return results(out)


def done_once(out: Path) -> None:
    """Each run's log says it was finished once (two workers on one run would both write into it)."""
    for seed in SEEDS:
        log = (out / f"base2new/coop/world/seed{seed}/log.txt").read_text()
        assert log.count(f"base2new coop world seed {seed}: done in") == 1, log


def test_slurm_job_array_through_submitits_local_executor_finishes_every_run_once(world_root, single, tmp_path,
                                                                                  capsys):
    out = tmp_path / "out"
    assert main(sweep_args(world_root, out, "--launcher", "slurm", "--jobs", "2", "--slurm-opt", "cluster=local",
                           "--slurm-opt", "time=20", "--wait")) == 0
    captured = capsys.readouterr()
    assert "submitted 2 worker(s) as SLURM job(s)" in captured.err and str(out / ".sweep" / "slurm") in captured.err
    assert results(out) == single
    done_once(out)
    logs = "".join(p.read_text() for p in (out / ".sweep" / "slurm").rglob("*_log.out"))
    for seed in SEEDS:  # the jobs' own logs, as SLURM keeps them: each run done by one job
        assert logs.count(f"base2new coop world seed {seed}: done in") == 1
    assert "| world |" in captured.out  # the tables, printed when the jobs are done


def test_a_preempted_slurm_worker_is_requeued_and_resumes_its_run(world_root, single, tmp_path):
    """SLURM preempts a job by sending its task SIGUSR2: submitit calls the worker's checkpoint(), requeues it
    (its local executor starts the task again), and the new task takes the run over and resumes it."""
    from metaprompt.launchers import submit_slurm, worker_argv

    out = tmp_path / "out"
    argv = worker_argv(sweep_args(world_root, out, "--launcher", "slurm"))
    (job,) = submit_slurm(argv, out, 1, ["cluster=local", "time=20"])
    preempted = signal_a_worker_mid_run(out, signal.SIGUSR2, time.monotonic() + 120)
    assert job.result() == 0
    assert results(out) == single
    done_once(out)
    assert (preempted / "log.txt").read_text().count(": started") == 2  # preempted, then resumed
    assert "this job is preempted" in "".join(p.read_text() for p in (out / ".sweep" / "slurm").rglob("*_log.err"))


def test_the_sbatch_script_holds_the_options_given(tmp_path, monkeypatch):
    from metaprompt.launchers import slurm_executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun before it writes a script
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    executor = slurm_executor(tmp_path / "out", ["partition=gpu", "gpus=1", "cpus=8", "mem_gb=32", "time=600",
                                                 "account=lab", "qos=high", "constraint=a100", "exclude=node3"])
    text = executor._executor._make_submission_file_text("python -m metaprompt run ...", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH --time=600", "#SBATCH --account=lab", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --exclude=node3", "#SBATCH --job-name=metaprompt-sweep",
                 f"#SBATCH --output={tmp_path / 'out' / '.sweep' / 'slurm'}/%j/%j_0_log.out"):
        assert line in text.splitlines(), text


@pytest.mark.parametrize("argv, expected", [
    (["--launcher", "slurm", "--slurm-opt", "partition"], "--slurm-opt 'partition': expected KEY=VALUE"),
    (["--launcher", "slurm", "--slurm-opt", "gpus=two"], "--slurm-opt gpus=two: expected a whole number"),
    (["--launcher", "slurm", "--slurm-opt", "cluster=moon"], "expected slurm, local or debug"),
    (["--launcher", "ray", "--jobs", "0"], "--jobs 0: expected 1 or more workers"),
    (["--jobs", "2"], "--jobs 2: expected 1 or more workers, with --launcher slurm or ray"),
    (["--launcher", "ray", "--gpus", "0,1"], "--gpus is the local launcher's"),
    (["--slurm-opt", "time=5"], "--slurm-opt is for --launcher slurm, not local"),
    (["--launcher", "slurm"], "expected a SLURM login node"),
    (["--launcher", "ray", "--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: no Ray cluster answers there"),
    (["--launcher", "ray", "--ray-address", "head:port"], "--ray-address head:port: expected HOST:PORT"),
])
def test_launcher_options_that_cannot_work_are_one_line(argv, expected, world_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no srun here, whatever the machine has
    assert main(sweep_args(world_root, tmp_path / "out", *argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[-1], lines


def test_a_missing_extra_names_it(world_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as without `pip install metaprompt-vl[slurm]`
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(sweep_args(world_root, tmp_path / "a", "--launcher", "slurm", "--slurm-opt", "cluster=local")) == 2
    assert "pip install 'metaprompt-vl[slurm]'" in capsys.readouterr().err
    assert main(sweep_args(world_root, tmp_path / "b", "--launcher", "ray")) == 2
    assert "pip install 'metaprompt-vl[ray]'" in capsys.readouterr().err


def test_ray_workers_finish_every_run_once_and_a_killed_one_is_started_again(world_root, single, tmp_path):
    """Two Ray tasks on a local cluster; the worker process of one is SIGKILLed in the middle of a run: Ray
    starts it again, its run is taken over and resumed, and the table is a single process's."""
    out = tmp_path / "out"
    log = tmp_path / "driver.log"
    args = sweep_args(world_root, out, "--launcher", "ray", "--jobs", "2")
    with log.open("w") as stream:
        driver = subprocess.Popen([sys.executable, "-m", "metaprompt", *args], stdout=stream,
                                  stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        killed_run = signal_a_worker_mid_run(out, signal.SIGKILL, time.monotonic() + 240)
        assert driver.wait(timeout=400) == 0, log.read_text()
    finally:
        driver.kill()
    assert results(out) == single
    done_once(out)
    run_log = (killed_run / "log.txt").read_text()
    assert run_log.count(": started") == 2, run_log  # killed once, then resumed by the task Ray started again
    assert "| world |" in log.read_text()  # the driver printed the tables when all were done


def signal_a_worker_mid_run(out: Path, sig: signal.Signals, deadline: float) -> Path:
    """Send ``sig`` to the process holding a run that has checkpointed but not finished; that run's folder."""
    leases = out / ".sweep" / "leases"
    while time.monotonic() < deadline:
        for lease in leases.glob("*.json") if leases.is_dir() else []:
            try:
                pid = json.loads(lease.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            folder = out / Path(*lease.stem.split("__"))
            if (folder / "checkpoint.pt").is_file() and not (folder / "prompts.safetensors").is_file():
                os.kill(pid, sig)
                return folder
        time.sleep(0.005)
    raise AssertionError("no worker was seen in the middle of a run")
