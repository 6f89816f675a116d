"""The scoring process's OpenMP settings: threads within the pod's CPU quota, a bounded spin while waiting, and a
deployment's own settings left alone; applied before torch loads (OpenMP reads them when it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aks_jobs.lm.scoring_server_settings import GOMP_SPIN_COUNT, openmp_environment

SPIN = {"GOMP_SPINCOUNT": str(GOMP_SPIN_COUNT)}


@pytest.mark.parametrize(
    ("env", "quota", "cpus", "added"),
    [
        ({}, None, 2, SPIN),  # no quota: torch's own thread count
        ({}, 2.0, 2, SPIN),
        ({}, 2.0, 4, {"OMP_NUM_THREADS": "2", **SPIN}),  # a 2-CPU limit on a 4-vCPU node
        ({}, 1.5, 4, {"OMP_NUM_THREADS": "1", **SPIN}),
        ({}, 0.5, 4, {"OMP_NUM_THREADS": "1", **SPIN}),
        ({"OMP_NUM_THREADS": "3"}, 2.0, 4, SPIN),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, None, 2, {}),
        ({"GOMP_SPINCOUNT": "0"}, None, 2, {}),
    ],
)
def test_openmp_settings_follow_the_pods_cpus_and_leave_the_deployments_own(env, quota, cpus, added):
    assert openmp_environment(env, quota, cpus) == added


def score_import_environment(env: dict[str, str]) -> dict[str, str | bool]:
    """The OpenMP settings in a fresh process after importing the scoring script, and whether torch was loaded
    before they were set."""
    code = (
        "import builtins, json, os, sys\n"
        "real = builtins.__import__\n"
        "def spy(name, *a, **k):\n"
        "    if name == 'torch' and 'GOMP_SPINCOUNT' not in os.environ and 'OMP_WAIT_POLICY' not in os.environ:\n"
        "        print(json.dumps({'torch_first': True})); sys.exit(0)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = spy\n"
        "import aks_jobs.score\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_scoring_script_sets_them_before_torch_loads():
    assert score_import_environment({}) == {"GOMP_SPINCOUNT": str(GOMP_SPIN_COUNT), "OMP_WAIT_POLICY": None}
    assert score_import_environment({"OMP_WAIT_POLICY": "PASSIVE"}) == {
        "GOMP_SPINCOUNT": None,
        "OMP_WAIT_POLICY": "PASSIVE",
    }
