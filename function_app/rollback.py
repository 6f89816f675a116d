"""Roll the traffic back to the kept previous deployment (POST /api/rollback).

The status table is written first, then the traffic shifted: a reconcile tick in between sees the table
name the previous deployment and shifts to it itself, never back. If the shift fails and the traffic did
not move, the table write is undone, so the table always says what serves. The deployment that served
stays as the new rollback target (a second rollback undoes the first); the runs whose models these are
record the rollback in their history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from function_app import reconcile
from function_app import run_states as rs
from function_app.backends.base import PipelineBackend
from function_app.run_states import DeploymentState
from function_app.status_store import Current, RunChanged, StatusStore

log = logging.getLogger(__name__)


class NothingToRollBack(Exception):
    """No previous deployment is kept, or it is gone or broken."""


class RolloutInProgress(Exception):
    """A run is deploying its candidate; rolling back now would race its traffic shift."""


class RollbackFailed(Exception):
    """The traffic shift failed and nothing changed."""


@dataclass(frozen=True)
class RolledBack:
    serving: str  # the deployment serving now
    replaced: str  # the one that served before, kept as the rollback target
    model_name: str
    model_version: str
    run: str  # the run whose model serves again ("" when its row was pruned)
    at: str
    requested_by: str


def roll_back(store: StatusStore, backend: PipelineBackend, now: datetime, requested_by: str) -> RolledBack:
    current = store.current()
    _refuse_during_rollout(store, current)
    target, replaced = current.previous_deployment, current.serving_deployment
    if not target:
        raise NothingToRollBack(
            "no previous deployment is kept: roll back needs a model deployed before the serving one"
        )
    deployment = next((d for d in backend.deployments() if d.name == target), None)
    if deployment is None:
        raise NothingToRollBack(f"the kept deployment {target} no longer exists; nothing to roll back to")
    if deployment.state == DeploymentState.FAILED:
        raise NothingToRollBack(f"the kept deployment {target} is failed; it cannot take the traffic")
    owner = store.deployed_run(target)
    at = now.isoformat()
    serving = {
        "serving_deployment": target,
        "previous_deployment": replaced,
        "serving_model_name": deployment.model_name,
        "serving_model_version": deployment.model_version,
        "serving_run_id": owner.id if owner else "",
        "serving_snapshot": owner.snapshot if owner else "",
        "rollback_at": at,
        "rollback_by": requested_by,
        "rollback_from": replaced,
    }
    if not store.replace_serving(current, serving, now):
        raise RolloutInProgress("the serving deployment changed meanwhile; look at the status and try again")
    try:
        backend.shift_traffic(target)
    except Exception as error:  # noqa: BLE001 - whatever the backend raised, the table must not lie
        if reconcile.serving_of(_traffic(backend)) != target:
            store.replace_serving(store.current(), _fields_of(current), now)
            raise RollbackFailed(
                f"could not shift the traffic to {target} ({error}); {replaced} still serves"
            ) from None
        log.warning("rollback: the shift to %s reported %s but took effect", target, error)
    result = RolledBack(
        target, replaced, deployment.model_name, deployment.model_version, serving["serving_run_id"], at, requested_by
    )
    _note_on_runs(store, {owner.id if owner else "", current.serving_run_id} - {""}, result)
    return result


def _refuse_during_rollout(store: StatusStore, current: Current) -> None:
    run = store.get_run(current.active_run_id) if current.active_run_id else None
    if run is not None and (run.state in rs.ROLLING_OUT or run.state == rs.DEPLOYED):
        raise RolloutInProgress(f"run {run.id} is deploying ({run.state}); roll back once it has ended")


def _traffic(backend: PipelineBackend) -> dict[str, int]:
    try:
        return backend.traffic()
    except Exception:  # noqa: BLE001 - unknown counts as not moved: the table goes back, reconcile repairs
        return {}


def _fields_of(current: Current) -> dict[str, str]:
    return {
        name: getattr(current, name)
        for name in (
            "serving_deployment",
            "previous_deployment",
            "serving_model_name",
            "serving_model_version",
            "serving_run_id",
            "serving_snapshot",
            "rollback_at",
            "rollback_by",
            "rollback_from",
        )
    }


def _note_on_runs(store: StatusStore, run_ids: set[str], done: RolledBack) -> None:
    """The run history: both runs (the one whose model served, the one whose model serves again) say so."""
    detail = (
        f"traffic moved from {done.replaced} to {done.serving} ({done.model_name} v{done.model_version}), "
        f"asked by {done.requested_by}"
    )
    for run_id in sorted(run_ids):
        for _ in range(3):  # an ended run changes only by such notes; a lost race is read again
            run = store.get_run(run_id)
            if run is None:
                break
            run.events.append({"at": done.at, "event": "rolled back", "detail": detail})
            try:
                store.save_run(run)
                break
            except RunChanged:
                continue
