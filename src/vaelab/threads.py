"""How many CPU threads torch uses: ``trainer.threads`` (0 = automatic).

torch's default is one intra-op thread per logical CPU it sees, per process. On small machines that is
often worse than fewer: on a 2-core machine the MLP VAE's small matrix products ran 5 times less efficiently
per CPU-second with two threads than with one, and DDP ranks that each take every core fight over them.
The automatic choice (``trainer.threads=0``) is $OMP_NUM_THREADS when it is set, else the physical cores
this process may run on (its CPU affinity and the container's CPU quota), split evenly among the DDP ranks
on the machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores available to this process (affinity, cgroup quota; hyperthreads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology (not Linux): count logical CPUs
    n = max(1, len(cores))
    quota = _cgroup_quota()
    return max(1, min(n, quota)) if quota else n


def _cgroup_quota() -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota (containers), rounded up; None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except OSError:
        return None
    if len(text) != 2 or text[0] == "max":
        return None
    try:
        return max(1, math.ceil(int(text[0]) / int(text[1])))
    except (ValueError, ZeroDivisionError):
        return None


def resolve_threads(threads: int = 0, ranks_per_machine: int = 1) -> int:
    """`threads` when positive; else $OMP_NUM_THREADS when set (the usual way to pin a job's threads);
    else physical cores // ranks on this machine (at least 1)."""
    if threads and threads > 0:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, physical_cores() // max(1, ranks_per_machine))


def apply_threads(threads: int = 0, ranks_per_machine: int = 1) -> int:
    """Set torch's intra-op threads as `resolve_threads` says; returns the number set."""
    import torch

    n = resolve_threads(threads, ranks_per_machine)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
