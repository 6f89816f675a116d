"""The control plane's brain: one `tick(now)` per timer firing advances everything.

A tick: records uploads no event reported, starts a run when uploads are waiting and none is
active, and moves the active run one or more steps along the state machine (run_states) from what
the backend reports. Each step calls the backend briefly and returns; nothing here waits for long
work. Transient backend errors are retried on later ticks with exponential backoff (recorded on the
run); permanent ones end the run with the reason. The serving model is only ever touched by a
promotion that passed its smoke test. The rules around that live in their own modules: deadlines
per state (deadlines), when a failed run's documents are retried (document_retries), and making the
table's serving deployment and the real traffic agree on every tick (reconcile).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from azure.storage.blob import ContainerClient

from function_app import (
    deadlines,
    document_retries,
    manifests,
    reconcile,
    rollback,
    run_choices,
    run_metrics,
    run_webhook,
    uploads,
)
from function_app import run_states as rs
from function_app.backends.base import (
    Deployment,
    PermanentBackendError,
    PipelineBackend,
    SmokeTestFailed,
    TransientBackendError,
)
from function_app.run_states import DeploymentState, JobState, RunState
from function_app.settings import Settings
from function_app.status_store import Run, RunChanged, StatusStore
from pipeline_contracts.api_requests import TrainChoices
from pipeline_contracts.evaluation import Evaluation

log = logging.getLogger(__name__)
_BACKOFF_FIRST_S = 10
_BACKOFF_MAX_S = 600


class RunActive(Exception):
    """A run is already active; only one at a time."""


class NoDocuments(Exception):
    """Nothing to train on."""


class NoActiveRun(Exception):
    """Nothing to cancel."""


def _iso(t: datetime) -> str:
    return t.isoformat()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def new_run_id(now: datetime) -> str:
    # Sortable, and valid as an AML job / deployment name part (letters, digits, hyphens).
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class Orchestrator:
    def __init__(self, store: StatusStore, backend: PipelineBackend, container: ContainerClient, settings: Settings):
        self.store = store
        self.backend = backend
        self.container = container
        self.settings = settings

    # ---- entry points ----------------------------------------------------------------------
    def tick(self, now: datetime) -> Run | None:
        """Record missed uploads, start a run if due, advance the active run, make the table's serving
        deployment and the backend's traffic agree, prune old runs and snapshots. Returns the active run.

        Each phase stands alone: an error in one (storage or backend unreachable) is logged and the
        others still run; a tick never raises, the next one picks up from what the table says."""
        self._phase("scan for uploads", uploads.scan, self.store, self.container, now)
        run = self._phase("advance the active run", self._advance_active, now)
        self._phase("reconcile the serving deployment", self._reconcile, now)
        self._phase("prune old runs", self._prune_runs)
        if run is None or run.state in rs.TERMINAL:  # a run in flight may still need its snapshot
            self._phase("prune old snapshots", self._prune_snapshots)
        return run

    def _phase(self, what: str, call, *args):
        try:
            return call(*args)
        except Exception:  # noqa: BLE001 - one failing phase must not stop the others or the timer
            log.exception("tick: could not %s; the next tick tries again", what)
            return None

    def _advance_active(self, now: datetime) -> Run | None:
        run = self._active_run(now)
        if run is None and self._due_documents(now):
            run = self._start_run(now, trigger="uploads")
        if run is not None:
            try:
                self._advance(run, now)
            except RunChanged as e:  # another instance moved it on meanwhile: its write stands
                log.info("%s; leaving it to that instance this tick", e)
                return self.store.get_run(run.id)
        return run

    def _due_documents(self, now: datetime) -> list[dict]:
        """Pending documents that may start a run now (new ones, and failed ones whose backoff is over)."""
        return [d for d in self.store.pending_documents() if document_retries.due(d, now, self.settings)]

    def request_cancel(self, now: datetime) -> Run:
        """Stop the active run: its job is cancelled (or its candidate rolled back) by a tick run now."""
        run_id = self.store.current().active_run_id
        if not run_id:
            raise NoActiveRun("no run is active; nothing to cancel")
        self.store.request_cancel(run_id, now)
        self.tick(now)
        return self.store.get_run(run_id) or Run(id=run_id, state=rs.PENDING, created_at=_iso(now))

    def request_retrain(self, now: datetime, choices: TrainChoices | None = None) -> Run:
        """A run over every document even though nothing new arrived (submitted on the next tick), trained
        with `choices` (unset ones: the app settings). BadChoices when they cannot go together."""
        train = run_choices.resolve(self.settings, choices)
        if self.store.current().active_run_id:
            raise RunActive(self.store.current().active_run_id)
        uploads.scan(self.store, self.container, now)  # deletes made since the last tick count too
        if not self.store.document_names():
            raise NoDocuments("inputs/ holds no document to train on; upload a PDF first")
        run = self._start_run(now, trigger="manual", train=train)
        if run is None:
            raise RunActive(self.store.current().active_run_id)
        return run

    def request_rollback(self, now: datetime, requested_by: str) -> rollback.RolledBack:
        """Give the traffic back to the kept previous deployment (rollback.roll_back says when it refuses)."""
        done = rollback.roll_back(self.store, self.backend, now, requested_by)
        self._tell_webhook(run_webhook.rollback_message(done))
        return done

    def _tell_webhook(self, message: dict) -> None:
        run_webhook.notify(self.settings.run_webhook_url, message, self.settings.run_webhook_timeout_s)

    def status(self) -> dict:
        current = self.store.current()
        active = self.store.get_run(current.active_run_id) if current.active_run_id else None
        last = self.store.get_run(current.last_run_id) if current.last_run_id else None
        in_flight = set(active.new_contents) if active else set()
        untrained = [(d, document_retries.gave_up(d, self.settings)) for d in self.store.pending_documents()]
        return {
            "state": rs.ui_status(active.state if active else None, current.last_run_state),
            "active_run": {"id": active.id, "step": active.state, "since": active.updated_at} if active else None,
            "last_run": {"id": last.id, "state": last.state, "error": last.error or None} if last else None,
            "serving_model": {
                "name": current.serving_model_name,
                "version": current.serving_model_version,
                "deployment": current.serving_deployment,
                "rollback_deployment": current.previous_deployment or None,
                "last_rollback": {
                    "at": current.rollback_at,
                    "by": current.rollback_by,
                    "from_deployment": current.rollback_from,
                }
                if current.rollback_at
                else None,
            }
            if current.serving_model_version
            else None,
            "scoring_url": current.scoring_url or None,
            # Untrained documents: waiting for a later run (not the active one's), or failed past the cap.
            "pending_documents": sum(not failed and d["sha256"] not in in_flight for d, failed in untrained),
            "failed_documents": sum(failed for _, failed in untrained),
            # Blobs under inputs/ that could not be recorded, each with the reason and what to do.
            "problem_documents": self.store.problems(),
            "updated_at": current.updated_at or None,
        }

    # ---- run lifecycle ---------------------------------------------------------------------
    def _active_run(self, now: datetime) -> Run | None:
        active_id = self.store.current().active_run_id
        if not active_id:
            return None
        run = self.store.get_run(active_id)
        if run is None:  # claimed, then the writer died before creating the run row
            run = self._new_run(active_id, now, trigger="uploads", detail="recovered a claimed run")
        elif run.state in rs.TERMINAL:  # ended, then the writer died before releasing the slot
            serving = None
            if run.state == rs.DEPLOYED:  # its traffic shift happened: record what serves now
                current = self.store.current()
                replaced = current.serving_deployment if current.serving_deployment != run.deployment else ""
                serving = self._serving(run, now, replaced or current.previous_deployment)
            self._settle_documents(run, now)
            self.store.finish_active(run, now, serving)
            return None
        return run

    def _start_run(self, now: datetime, trigger: str, train: TrainChoices | None = None) -> Run | None:
        run_id = new_run_id(now)
        if not self.store.claim_active(run_id, now):
            return None  # another instance won the claim; its run covers these uploads
        detail = "manual retrain" if trigger == "manual" else "waiting for uploads to settle"
        return self._new_run(run_id, now, trigger, detail, train)

    def _new_run(self, run_id: str, now: datetime, trigger: str, detail: str, train: TrainChoices | None = None) -> Run:
        train = train or run_choices.resolve(self.settings, None)
        run = Run(id=run_id, state=rs.START, created_at=_iso(now), trigger=trigger, train=train.model_dump(mode="json"))
        self._enter(run, rs.START, now, detail)
        return run

    def _transition(self, run: Run, state: RunState, now: datetime, detail: str = "") -> None:
        """Every state change after the first: the transition table (run_states) must allow it."""
        self._enter(run, rs.check(run.state, state), now, detail)

    def _enter(self, run: Run, state: RunState, now: datetime, detail: str) -> None:
        run.state = state
        run.updated_at = _iso(now)
        run.transitions.append({"state": state, "at": _iso(now), "detail": detail})
        self.store.save_run(run)
        log.info("run %s -> %s %s", run.id, state, detail)

    def _end(self, run: Run, state: RunState, now: datetime, detail: str, serving: dict | None = None) -> None:
        if state in rs.ENDED_BADLY:
            run.error = detail
        self._transition(run, state, now, detail)
        self._settle_documents(run, now)
        self.store.finish_active(run, now, serving)
        self._tell_webhook(run_webhook.run_message(run))

    def _settle_documents(self, run: Run, now: datetime) -> None:
        """Documents count as trained only when their run ended Deployed or Rejected; otherwise they wait
        again, with backoff. Before the slot is released, so a lost write is redone by the next tick."""
        if document_retries.ended_well(run.state):
            self.store.mark_trained_by(run.id, run.new_contents)
        else:
            reason = f"run {run.id} {run.state}: {run.error}"
            self.store.give_back(
                run.id,
                run.new_contents,
                reason,
                lambda attempts: document_retries.retry_at(attempts, now, self.settings),
            )

    def _advance(self, run: Run, now: datetime) -> None:
        """Take as many steps as are ready now (e.g. Completed -> Deploying -> begin deploy)."""
        steps = {
            rs.PENDING: self._submit_when_settled,
            rs.DEPLOYING: self._follow_deployment,
            rs.SMOKE_TEST: self._smoke_test_and_promote,
            **{s: self._follow_job for s in rs.JOB_RUNNING},
        }
        while run.state not in rs.TERMINAL:
            stop = self._stop_reason(run, now)
            if stop:
                self._stop(run, now, stop)
                return
            retry_at = run.retry.get("next_attempt_at")
            if retry_at and now < _time(retry_at):
                return
            before = run.state
            try:
                steps[run.state](run, now)
                run.retry = {}
            except RunChanged:
                raise
            except PermanentBackendError as e:
                self._give_up(run, now, str(e))
            except Exception as e:  # noqa: BLE001 - transient, or unknown: retried, then given up with the reason
                self._retry_later(run, now, e)
            self.store.save_run(run)
            if run.state == before:
                return

    def _stop_reason(self, run: Run, now: datetime) -> str | None:
        if self.store.current().cancel_run_id == run.id:
            return "cancelled through the API (POST /api/runs/active/cancel)"
        return deadlines.overdue(run, now, self.settings)

    def _stop(self, run: Run, now: datetime, reason: str) -> None:
        """Cancel the run's job, or roll its candidate back, and end it with the reason."""
        if run.state in rs.ROLLING_OUT:
            self._roll_back(run, now, reason)
            return
        if run.job_id:
            try:
                self.backend.cancel_job(run.job_id, reason)
                reason += f"; job {run.job_id} cancelled"
            except Exception as e:  # noqa: BLE001 - the run ends regardless; the reason says what to do
                log.warning("run %s: could not cancel job %s: %s", run.id, run.job_id, e)
                reason += f"; cancelling job {run.job_id} failed ({e}): cancel it in the workspace"
        self._end(run, rs.FAILED, now, reason)

    def _retry_later(self, run: Run, now: datetime, error: Exception) -> None:
        kind = "transient" if isinstance(error, TransientBackendError) else type(error).__name__
        reason = f"{kind} error in {run.state}: {error}"
        attempts = run.retry.get("attempts", 0) + 1
        if not isinstance(error, TransientBackendError):
            log.exception("unexpected error advancing run %s", run.id, exc_info=error)
        if attempts > self.settings.max_transient_retries:
            self._give_up(run, now, f"gave up after {attempts - 1} retries; last: {reason}")
            return
        delay = min(_BACKOFF_FIRST_S * 2 ** (attempts - 1), _BACKOFF_MAX_S)
        run.retry = {
            "attempts": attempts,
            "next_attempt_at": _iso(now + timedelta(seconds=delay)),
            "last_error": reason,
        }
        run.events.append({"at": _iso(now), "event": f"retry {attempts} in {delay}s", "detail": reason})
        log.warning("run %s: %s; retry %d in %ds", run.id, reason, attempts, delay)

    def _give_up(self, run: Run, now: datetime, reason: str) -> None:
        if run.state in rs.ROLLING_OUT:
            self._roll_back(run, now, reason)
        else:
            self._end(run, rs.FAILED, now, reason)

    def _roll_back(self, run: Run, now: datetime, reason: str) -> None:
        """Give the traffic back to the serving deployment if the candidate holds it (a shift that took
        effect but reported an error), then remove the candidate; the serving deployment and its
        rollback target stay. (Both backends refuse to delete a deployment that takes traffic.)"""
        if run.deployment:
            traffic = self._best_effort(run, now, "read the traffic", self.backend.traffic) or {}
            serving = self.store.current().serving_deployment
            if traffic.get(run.deployment) and serving and serving != run.deployment:
                # If this fails, reconciliation on the next ticks shifts it back.
                self._best_effort(run, now, f"give the traffic back to {serving}", self.backend.shift_traffic, serving)
            # If this fails the candidate stays at 0% traffic; the next promotion removes it.
            self._best_effort(
                run, now, f"delete candidate {run.deployment}", self.backend.delete_deployment, run.deployment
            )
        self._end(run, rs.ROLLED_BACK, now, reason)

    @staticmethod
    def _best_effort(run: Run, now: datetime, what: str, call, *args):
        """A call whose failure must not change the run's outcome: recorded on the run instead."""
        try:
            return call(*args)
        except Exception as e:  # noqa: BLE001 - noted on the run for whoever looks at it
            run.events.append({"at": _iso(now), "event": f"could not {what}", "detail": str(e)})
            log.warning("run %s: could not %s: %s", run.id, what, e)
            return None

    # ---- steps -----------------------------------------------------------------------------
    def _submit_when_settled(self, run: Run, now: datetime) -> None:
        pending = self.store.pending_documents()
        due = [d for d in pending if document_retries.due(d, now, self.settings)]
        if run.trigger != "manual" and due:
            last_upload = max(_time(d["last_uploaded_at"]) for d in due)
            settling = now - last_upload < timedelta(seconds=self.settings.debounce_seconds)
            waited_enough = now - _time(run.created_at) >= timedelta(seconds=self.settings.debounce_max_wait_seconds)
            if settling and not waited_enough:
                return  # uploads still arriving: the run will include them (up to DEBOUNCE_MAX_WAIT_SECONDS)
        names = self.store.document_names()
        if not names:
            raise PermanentBackendError("inputs/ holds no recorded document; upload a PDF and retrain")
        # Every untrained content the job will see, saved before the submit: however the run ends
        # (even a refused submit), these are the documents it settles.
        run.documents = names
        run.new_documents = sorted(n for d in pending for n in d["names"])
        run.new_contents = sorted(d["sha256"] for d in pending)
        self.store.save_run(run)
        # Runs recorded before training choices existed train with the app settings, as they did then.
        job_id = self.backend.submit(run.id, TrainChoices.model_validate(run.train) if run.train else None)
        run.job_id = job_id
        self._transition(run, rs.SUBMITTED, now, f"job {job_id} over {len(names)} documents")

    def _follow_job(self, run: Run, now: datetime) -> None:
        status = self.backend.job_status(run.job_id)
        if status.training is not None:  # the extraction totals stay beside the train summary
            extraction = {"extraction": run.metrics["extraction"]} if "extraction" in run.metrics else {}
            run.metrics = run_metrics.fit({**status.training.model_dump(mode="json"), **extraction})
        self._record_extraction(run, status.evaluation)
        if status.state in rs.JOB_RUNNING:
            if rs.ORDER.index(status.state) > rs.ORDER.index(run.state):
                self._transition(run, RunState(status.state), now)
        elif status.state == JobState.FAILED:
            raise PermanentBackendError(status.error or "the pipeline job failed without a reason")
        elif status.state == JobState.COMPLETED:
            if status.evaluation is None:
                raise PermanentBackendError("the pipeline job completed without an evaluation")
            self._decide(run, status.evaluation, now)
        else:
            raise PermanentBackendError(f"backend reported unknown job state {status.state!r}")

    def _record_extraction(self, run: Run, evaluation: Evaluation | None) -> None:
        """Once the job names the snapshot its preprocess wrote: per-document outcome on the documents."""
        if run.snapshot:
            return
        # A job submitted before jobs recorded their snapshot names it only in its evaluation.
        snapshot = manifests.run_snapshot(self.container, run.id) or (evaluation.snapshot if evaluation else None)
        manifest = manifests.read_manifest(self.container, snapshot) if snapshot else None
        if manifest:
            run.snapshot = manifest.snapshot
            run.metrics = {**run.metrics, "extraction": manifest.totals.model_dump()}
            self.store.record_extraction(manifest)

    def _decide(self, run: Run, evaluation: Evaluation, now: datetime) -> None:
        run.evaluation = evaluation.model_dump(mode="json", exclude={"training"})  # training: in run.metrics
        if evaluation.decision != "promote":
            self._end(run, rs.REJECTED, now, evaluation.reason or "evaluation did not promote the candidate")
            return
        if evaluation.registered is None:
            raise PermanentBackendError("evaluate promoted the candidate but registered no model version")
        run.model_name, run.model_version = evaluation.registered.name, evaluation.registered.version
        self._transition(run, rs.DEPLOYING, now, f"{run.model_name} v{run.model_version}: {evaluation.reason}")

    def _follow_deployment(self, run: Run, now: datetime) -> None:
        if not run.deployment:
            # Blue/green: the candidate goes up beside the serving deployment and its rollback target; both
            # stay untouched until the candidate has taken the traffic (_promote removes older ones then).
            deployment = self.backend.begin_deploy(run.id, run.model_name, run.model_version)
            run.deployment, run.deploy_started_at = deployment.name, _iso(now)
            self.store.save_run(run)
        deployment = self.backend.deployment(run.deployment)
        if deployment.state == DeploymentState.READY:
            self._transition(run, rs.SMOKE_TEST, now, f"deployment {deployment.name} ready")
        elif deployment.state == DeploymentState.FAILED:
            self._roll_back(run, now, f"deployment {deployment.name} failed to start")
        elif now - _time(run.deploy_started_at) > timedelta(seconds=self.settings.deploy_timeout_seconds):
            self._roll_back(
                run, now, f"deployment {deployment.name} not ready after {self.settings.deploy_timeout_seconds}s"
            )

    def _smoke_test_and_promote(self, run: Run, now: datetime) -> None:
        before = self.backend.deployments()
        if any(d.name == run.deployment and d.traffic == 100 for d in before):
            # A retry after a traffic shift that took effect (its answer was lost, or a later step failed):
            # the smoke test passed before the shift, and what it replaced is what the table records as
            # serving, since the candidate's traffic hides it now.
            smoke = "smoke test passed before the traffic shift"
            replaced = self.store.current().serving_deployment
        else:
            try:
                smoke = f"smoke test said: {self._smoke_test(run)[:200]}"
            except SmokeTestFailed as e:  # the candidate is unfit: it goes, the serving model stays
                self._roll_back(run, now, f"smoke test failed: {e}")
                return
            replaced = next((d.name for d in before if d.traffic > 0 and d.name != run.deployment), "")
            self.backend.shift_traffic(run.deployment)
        self._promote(run, now, before, replaced, smoke)

    def _smoke_test(self, run: Run) -> str:
        """The candidate's answer; SmokeTestFailed when it has none. Transient errors propagate: retried later."""
        answer = self.backend.smoke_test(run.deployment, self.settings.smoke_prompt)
        if not answer or not answer.strip():
            raise SmokeTestFailed("the deployment answered with no text")
        return answer

    def _promote(self, run: Run, now: datetime, before: list[Deployment], replaced: str, smoke: str) -> None:
        """The candidate serves from here on: a failing step below must never roll it back."""
        previous = replaced if replaced != run.deployment and any(d.name == replaced for d in before) else ""
        # Only now, with the traffic on the candidate, do older deployments go: the new one and the one it
        # replaced (the rollback target) stay; the rest (the older target, leftover candidates) goes.
        for d in before:
            if d.name not in (run.deployment, previous):
                self._best_effort(run, now, f"delete {d.name}", self.backend.delete_deployment, d.name)
        self._end(
            run, rs.DEPLOYED, now, f"100% traffic on {run.deployment}; {smoke}", self._serving(run, now, previous)
        )

    def _prune_snapshots(self) -> None:
        """Retention: the newest SNAPSHOT_RETENTION snapshots and the serving model's stay, the rest go."""
        if self.settings.snapshot_retention <= 0:
            return
        # A failure is logged by the tick's phase and retried on the next tick.
        deleted = manifests.prune_snapshots(
            self.container, self.settings.snapshot_retention, {self.store.current().serving_snapshot}
        )
        if deleted:
            log.info("retention: deleted snapshots %s", ", ".join(deleted))

    def _serving(self, run: Run, now: datetime, previous: str) -> dict[str, str]:
        """The state-table fields that say which model a Deployed run left serving."""
        return {
            "serving_snapshot": run.snapshot,
            "serving_model_name": run.model_name,
            "serving_model_version": run.model_version,
            "serving_deployment": run.deployment,
            "previous_deployment": previous,
            "serving_run_id": run.id,
            "scoring_url": self._best_effort(run, now, "read the scoring URL", self.backend.scoring_url) or "",
        }

    # ---- every tick --------------------------------------------------------------------------
    def _reconcile(self, now: datetime) -> None:
        def in_rollout(current) -> bool:
            run = self.store.get_run(current.active_run_id) if current.active_run_id else None
            return run is not None and (run.state in rs.ROLLING_OUT or run.state == rs.DEPLOYED)

        reconcile.reconcile(self.store, self.backend, now, in_rollout)

    def _prune_runs(self) -> None:
        current = self.store.current()
        protect = {current.active_run_id, current.last_run_id, current.serving_run_id}
        self.store.prune_runs(self.settings.keep_runs, protect)
