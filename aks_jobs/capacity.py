"""What this machine or container may use: CPUs and memory (the preprocess step's workers, the scoring
server's threads).

os.cpu_count() reports the whole node inside a Kubernetes pod; the pod's real share is its cgroup
CPU quota, and N workers that may each use --memory-mb must also fit in the pod's memory limit,
or the kernel kills the whole job instead of one worker hitting its own limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs quota), None when unlimited."""
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """Bytes allowed by the cgroup memory limit (v2 memory.max, else v1), None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        value = _read(path)
        # v1 reports "no limit" as a huge page-aligned number.
        if value and value != "max" and int(value) < 2**60:
            return int(value)
    return None


def available_cpus(root: Path = CGROUP) -> int:
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(root)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def choose_workers(requested: int, memory_mb: int, root: Path = CGROUP) -> int:
    """`requested` if > 0, else one per available CPU, capped so N x memory_mb fits the memory limit."""
    if requested > 0:
        return requested
    workers = available_cpus(root)
    memory = cgroup_memory_limit(root)
    if memory:
        workers = min(workers, max(1, memory // (memory_mb * 2**20)))
    return workers
