"""Make the status table's serving deployment and the backend's real traffic agree (every tick).

Only a promotion that passed its smoke test changes what the table says serves, so when the two
differ and the table's deployment still exists, the traffic goes back to it (e.g. a traffic shift
that took effect although it reported an error, and whose run was rolled back). When the table's
deployment is gone, the table records what really serves. The decision is plain logic (`plan`);
`reconcile` reads, decides and acts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from function_app.backends.base import Deployment, PipelineBackend
from function_app.status_store import Current, StatusStore

log = logging.getLogger(__name__)
NOTHING, RESTORE, RECORD = "nothing", "restore", "record"


@dataclass(frozen=True)
class Plan:
    action: str  # NOTHING | RESTORE (shift traffic back to the table's) | RECORD (table := backend)
    deployment: str = ""  # RESTORE: the deployment to shift to; RECORD: what serves ("" = nothing)
    detail: str = ""


def serving_of(traffic: dict[str, int]) -> str:
    """The deployment holding (most of) the traffic, "" when none does."""
    shares = {name: share for name, share in traffic.items() if share > 0}
    return max(shares, key=shares.get) if shares else ""


def plan(table_serving: str, traffic: dict[str, int], deployment_names: set[str]) -> Plan:
    real = serving_of(traffic)
    if real == table_serving and (not real or traffic[real] == 100):
        return Plan(NOTHING)
    if table_serving and table_serving in deployment_names:
        return Plan(
            RESTORE,
            table_serving,
            f"traffic was {traffic or 'on no deployment'}; the status table says {table_serving} serves",
        )
    return Plan(
        RECORD,
        real,
        f"the status table said {table_serving or 'nothing'} serves, which no longer "
        f"exists; {real or 'nothing'} takes the traffic",
    )


def reconcile(
    store: StatusStore, backend: PipelineBackend, now: datetime, in_rollout: Callable[[Current], bool]
) -> Plan:
    """Compare and repair, unless `in_rollout(current)`: a run between its traffic shift and the release
    of the active slot settles the difference itself. Traffic is read first: a shift seen here happened
    before the table reads below, so its run shows as in rollout in them."""
    traffic = backend.traffic()
    current = store.current()
    if in_rollout(current):
        return Plan(NOTHING)
    if plan(current.serving_deployment, traffic, set()).action == NOTHING:
        return Plan(NOTHING)
    deployments = {d.name: d for d in backend.deployments()}
    decision = plan(current.serving_deployment, traffic, set(deployments))
    if decision.action == RESTORE:
        log.warning("reconcile: %s; shifting traffic back to %s", decision.detail, decision.deployment)
        backend.shift_traffic(decision.deployment)
    elif decision.action == RECORD:
        log.warning("reconcile: %s; recording it", decision.detail)
        store.set_serving(now, **_serving_fields(current, deployments.get(decision.deployment)))
    return decision


def _serving_fields(current: Current, serving: Deployment | None) -> dict[str, str]:
    if serving is None:
        return {
            "serving_model_name": "",
            "serving_model_version": "",
            "serving_deployment": "",
            "serving_run_id": "",
            "scoring_url": "",
        }
    return {
        "serving_model_name": serving.model_name,
        "serving_model_version": serving.model_version,
        "serving_deployment": serving.name,
        "serving_run_id": "",
        "previous_deployment": "" if current.previous_deployment == serving.name else current.previous_deployment,
        "scoring_url": current.scoring_url,
    }
