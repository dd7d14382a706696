"""Starting a sweep's workers on the engines people already run: this machine (``--launcher local``, one worker
per ``--gpus`` entry), SLURM through submitit (``--launcher slurm``: a job array), a Ray cluster (``--launcher
ray``: tasks).

A worker is the very ``metaprompt run ...`` command the user typed, less the launcher's options: the engine
places and restarts it, and the sweep's leases keep every run done exactly once whatever started it, resumed from
its own checkpoint when a worker was preempted or lost (see :mod:`metaprompt.leases`). Results, feature store
and logs stay in ``--out``, which every worker must see (a shared file system).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MetapromptError
from .leases import SWEEP_DIR

LAUNCHERS = ("local", "slurm", "ray")
LAUNCHER_OPTIONS = {"--launcher": 1, "--jobs": 1, "--slurm-opt": 1, "--ray-address": 1, "--wait": 0, "--gpus": 1}
"""The options that start workers (with how many values each takes): a worker's command line has none of them."""
SLURM_OPTIONS = {
    "cluster": None, "partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
    "constraint": "slurm_constraint", "gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem_gb": "mem_gb",
    "time": "timeout_min", "array_parallelism": "slurm_array_parallelism",
}
"""``--slurm-opt`` keys submitit knows by name (``time`` in minutes, ``mem_gb`` in GB); any other key is passed to
sbatch as ``--KEY=VALUE`` (``--slurm-opt exclude=node3``). ``cluster``: ``slurm`` (default), ``local`` (submitit's
local executor, on this machine) or ``debug``."""
INTEGER_OPTIONS = ("gpus", "cpus", "mem_gb", "time", "array_parallelism")
RETRIES = 3
"""How often Ray starts a worker again whose process or node died."""


def worker_argv(argv: list[str]) -> list[str]:
    """The command line of one worker: ``argv`` without the launcher's options."""
    out, skip = [], 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        name = token.split("=", 1)[0]
        if name in LAUNCHER_OPTIONS:
            skip = 0 if "=" in token else LAUNCHER_OPTIONS[name]
            continue
        out.append(token)
    return out


def slurm_options(pairs: list[str]) -> tuple[str, dict[str, Any]]:
    """The submitit cluster and executor parameters that ``--slurm-opt KEY=VALUE`` pairs give."""
    cluster, named, extra = "slurm", {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise MetapromptError(f"--slurm-opt {pair!r}: expected KEY=VALUE (e.g. partition=gpu, gpus=1, time=600)")
        value = value.strip()
        if key == "cluster":
            if value not in ("slurm", "local", "debug"):
                raise MetapromptError(f"--slurm-opt cluster={value}: expected slurm, local or debug")
            cluster = value
        elif key in SLURM_OPTIONS:
            if key in INTEGER_OPTIONS:
                if not value.isdigit():
                    raise MetapromptError(f"--slurm-opt {key}={value}: expected a whole number")
                value = int(value)
            named[SLURM_OPTIONS[key]] = value
        else:
            extra[key] = value
    if extra:
        named["slurm_additional_parameters"] = extra
    return cluster, named


def slurm_executor(out: str | Path, pairs: list[str]):
    """A submitit executor for the sweep into ``out``: jobs named after it, logs in ``OUT/.sweep/slurm/``."""
    try:
        import submitit
    except ImportError:
        raise MetapromptError("--launcher slurm needs submitit: pip install 'metaprompt-vl[slurm]'") from None
    cluster, parameters = slurm_options(pairs)
    try:
        executor = submitit.AutoExecutor(folder=slurm_folder(out) / "%j", cluster=cluster)
    except RuntimeError as err:
        raise MetapromptError(f"--launcher slurm: {_last_line(err)} (expected a SLURM login node, with srun and "
                              "sbatch on PATH); --slurm-opt cluster=local runs the same jobs on this machine") from None
    executor.update_parameters(name="metaprompt-sweep", **parameters)
    return executor


def slurm_folder(out: str | Path) -> Path:
    return Path(out) / SWEEP_DIR / "slurm"


@dataclass
class SweepWorker:
    """One sweep worker as a submitit job: calling it runs the command in the job's process; ``checkpoint`` (which
    submitit calls on preemption or at the time limit) requeues the same worker, which resumes the run it held
    from that run's checkpoint (its lease is taken over once the old job is gone)."""

    argv: list[str]

    def __call__(self) -> int:
        from .cli import main

        code = main(list(self.argv))
        if code:
            raise RuntimeError(f"the sweep worker `metaprompt {' '.join(self.argv)}` exited {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(SweepWorker(list(self.argv)))


def submit_slurm(argv: list[str], out: str | Path, jobs: int, pairs: list[str]) -> list:
    """``jobs`` workers of ``argv`` as one submitit job array; the submitted jobs."""
    executor = slurm_executor(out, pairs)
    try:
        with executor.batch():
            submitted = [executor.submit(SweepWorker(argv)) for _ in range(jobs)]
    except Exception as err:  # noqa: BLE001 - sbatch missing or refusing: one line with its own words
        raise MetapromptError(f"--launcher slurm: the job array could not be submitted ({_last_line(err)}); "
                              "is this a SLURM login node (sbatch on PATH)? --slurm-opt cluster=local runs it here") from None
    return submitted


def wait_slurm(submitted: list) -> list[str]:
    """Wait for the jobs; one line per job that failed."""
    failures = []
    for job in submitted:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - a job's failure, said in one line
            failures.append(f"SLURM job {job.job_id} failed: {_last_line(err)} (log: {job.paths.stderr})")
    return failures


class WorkerKilled(RuntimeError):
    """A worker process ended by a signal (killed, its node lost): Ray starts it again."""


class WorkerFailed(RuntimeError):
    """A worker that stopped on an error of its own (bad input): not started again."""


def ray_worker(argv: list[str]) -> int:
    """A Ray task: one sweep worker, in a process of its own (a killed process is retried by Ray)."""
    done = subprocess.run([sys.executable, "-m", "metaprompt", *argv], capture_output=True, text=True)
    if done.returncode < 0:
        raise WorkerKilled(f"the sweep worker was killed by signal {-done.returncode}")
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith("metaprompt:")]
        raise WorkerFailed(errors[-1] if errors else f"the sweep worker exited {done.returncode}")
    return 0


def run_ray(argv: list[str], jobs: int, address: str | None) -> list[str]:
    """``jobs`` workers of ``argv`` as Ray tasks on the cluster at ``address`` (or RAY_ADDRESS; a local one started
    for the call otherwise): one GPU each where the cluster has GPUs, one CPU otherwise. Waits for them; one line
    per worker that failed."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:  # a cluster of this machine only: every part of it on loopback, none on a network address
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise MetapromptError("--launcher ray needs ray: pip install 'metaprompt-vl[ray]'") from None
    check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as err:  # noqa: BLE001 - connection refused, bad address: one line
        raise MetapromptError(f"--launcher ray: cannot reach a Ray cluster at {address or '(a new local one)'} "
                              f"({_last_line(err)})") from None
    try:
        resources = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}
        print(f"started {jobs} worker(s) as Ray tasks ({'one GPU' if 'num_gpus' in resources else 'one CPU'} each) "
              f"on {address or 'a local Ray cluster'}", file=sys.stderr)
        task = ray.remote(max_retries=RETRIES, retry_exceptions=[WorkerKilled], **resources)(ray_worker)
        refs = [task.remote(argv) for _ in range(jobs)]
        failures = []
        for ref in refs:
            try:
                ray.get(ref)
            except Exception as err:  # noqa: BLE001 - the task's own error, said in one line
                failures.append(f"Ray worker failed: {_last_line(getattr(err, 'cause', None) or err)}")
        return failures
    finally:
        ray.shutdown()


RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0 before ray is imported, Ray gives its processes the loopback address instead of the machine's network
one (as it does on a laptop): the local cluster started for one call needs no network."""
CONNECT_SECONDS = 10


def check_reachable(address: str | None) -> None:
    """A ``host:port`` cluster address that refuses or does not answer is one line at once (Ray itself retries
    for minutes); ``auto``, ``ray://`` and ``local`` addresses are Ray's to resolve."""
    if not address or address == "auto" or "://" in address or address.count(":") != 1:
        return
    host, port = address.rsplit(":", 1)
    if not port.isdigit():
        raise MetapromptError(f"--ray-address {address}: expected HOST:PORT (the head node's GCS port, e.g. 6379), "
                              "ray://HOST:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise MetapromptError(f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); "
                              "expected the head node's address (ray start --head prints it)") from None


def _last_line(err: BaseException) -> str:
    """The last non-blank line of ``err``'s text: where submitit and Ray put the cause of a job's failure."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__
