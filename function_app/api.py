"""The HTTP API (FastAPI): what the system is doing, its runs and documents, and a retrain button.

Every route answers one of pipeline_contracts.api_responses (its response_model), which the UI reads too.
Served by the Functions host through AsgiFunctionApp (function_app.functions), or by uvicorn
without Core Tools (`uvicorn function_app.api:api`). Paths carry the /api prefix themselves, which
is also the host's default routePrefix, so URLs are the same under both.

Auth: in Azure the host checks the function key before a request reaches this app (auth level
FUNCTION). Under uvicorn there is no host, so POST /api/retrain checks LOCAL_API_KEY itself
(header x-functions-key, as in Azure) or, with no key configured, accepts only this machine, and from
it only requests no other web site can make a browser send: a POST must carry a JSON body (a cross-site
form or fetch cannot without a CORS preflight, which this API never grants) and neither Origin nor
Sec-Fetch-Site may name another site.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status

from function_app import document_retries, rollback, run_choices, services, uploads
from function_app.backends.base import PermanentBackendError, TransientBackendError
from function_app.orchestrator import NoActiveRun, NoDocuments, RunActive
from function_app.status_store import Run
from pipeline_contracts import api_responses as answers
from pipeline_contracts.api_requests import RollbackRequest

api = FastAPI(
    title="GPT-2 PDF pipeline control plane",
    description="Status of the PDF -> fine-tuned GPT-2 pipeline: uploads, runs, the serving model.",
    version="1.0.0",
    openapi_url="/api/openapi.json",
    docs_url="/api/docs",
    redoc_url=None,
)
_LOOPBACK = {"127.0.0.1", "::1"}
# Present in the ASGI scope only when the Functions host (AsgiMiddleware) serves the request.
_FUNCTIONS_SCOPE_KEY = "azure_functions.function_name"


def get_services() -> services.Services:
    return services.get()


def require_caller_allowed(request: Request, svc: services.Services = Depends(get_services)) -> None:
    if _FUNCTIONS_SCOPE_KEY in request.scope:
        return  # the host already checked the function key
    key = svc.settings.local_api_key
    if key:
        if not secrets.compare_digest(request.headers.get("x-functions-key", ""), key):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "send the LOCAL_API_KEY value in the x-functions-key header"
            )
    elif request.client is None or request.client.host not in _LOOPBACK:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "without LOCAL_API_KEY set, only requests from this machine may change state"
        )
    else:
        _refuse_cross_site(request)


def _refuse_cross_site(request: Request) -> None:
    """Loopback is not proof of intent: any page open in this machine's browser can send requests here."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if (fetch_site and fetch_site not in ("same-origin", "none")) or (
        origin is not None and urlsplit(origin).netloc != request.headers.get("host")
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"cross-site request refused (Origin {origin!r}, Sec-Fetch-Site {fetch_site!r}): without LOCAL_API_KEY "
            "only the UI and local scripts may change state",
        )
    if request.method == "POST" and request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send a JSON body (Content-Type: application/json), e.g. {}"
        )


def _summary(run: Run) -> dict:
    return {
        "id": run.id,
        "state": run.state,
        "trigger": run.trigger,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "documents": len(run.documents),
        "new_documents": len(run.new_documents),
        "model_version": run.model_version or None,
        "perplexity": run.metrics.get("perplexity"),
        "error": run.error or None,
    }


@api.get("/api/health", response_model=answers.Health)
def health(svc: services.Services = Depends(get_services)) -> dict:
    try:
        svc.store.current()
    except Exception as e:  # noqa: BLE001 - report, do not crash: this is what the probe is for
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"status table unreachable: {e}") from None
    return {"status": "ok", "backend": svc.settings.pipeline_backend}


@api.get("/api/status", response_model=answers.Status)
def get_status(svc: services.Services = Depends(get_services)) -> dict:
    return svc.orchestrator.status()


@api.get("/api/runs", response_model=answers.RunsPage)
def list_runs(
    limit: int = Query(50, ge=1, le=500, description="runs per page"),
    before: str = Query("", description="the `next` of the previous page: runs older than this run id"),
    svc: services.Services = Depends(get_services),
) -> dict:
    """Runs, newest first, a page at a time; `next` is the cursor of the following page (null at the end)."""
    runs, cursor = svc.store.runs_page(limit, before)
    return {"runs": [_summary(r) for r in runs], "next": cursor or None}


@api.post(
    "/api/runs/active/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=answers.RunCancelled,
    dependencies=[Depends(require_caller_allowed)],
)
def cancel_active_run(svc: services.Services = Depends(get_services)) -> dict:
    """Cancel the active run: its job is cancelled (or its candidate rolled back); the serving model stays."""
    try:
        run = svc.orchestrator.request_cancel(datetime.now(UTC))
    except NoActiveRun as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    return {"run": run.id, "state": run.state, "error": run.error or None}


@api.get("/api/runs/{run_id}", response_model=answers.RunDetail)
def get_run(run_id: str, svc: services.Services = Depends(get_services)) -> dict:
    run = svc.store.get_run(run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r}; GET /api/runs lists them")
    return {**run.to_api(), "evaluation": run.evaluation or None, "train": run.train or None}


@api.get("/api/documents", response_model=answers.Documents)
def list_documents(svc: services.Services = Depends(get_services)) -> dict:
    current = svc.store.current()
    active = svc.store.get_run(current.active_run_id) if current.active_run_id else None
    in_flight = set(active.new_contents) if active else set()
    docs = svc.store.documents()
    # Only the runs the documents name, and only their state.
    states = {run_id: svc.store.run_state(run_id) for run_id in {d["trained_by_run"] for d in docs} - {""}}
    documents = []
    for doc in docs:
        doc["state"] = document_retries.state_of(doc, in_flight, svc.settings)
        first = doc.pop("trained_by_run")
        doc["first_run"] = {"id": first, "state": states.get(first)} if first else None
        doc["active_run"] = active.id if doc["state"] == document_retries.IN_RUN else None
        doc.pop("last_attempt_run", None)  # bookkeeping of give_back, not for readers
        documents.append(doc)
    return {"documents": documents}


@api.delete(
    "/api/documents/{name:path}", response_model=answers.DocumentRemoved, dependencies=[Depends(require_caller_allowed)]
)
def delete_document(name: str, svc: services.Services = Depends(get_services)) -> dict:
    """Delete the upload inputs/<name>: no later run trains on it, and its cached text is purged."""
    if name not in svc.store.known_blobs() and name not in {p["name"] for p in svc.store.problems()}:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no document {name!r} in inputs/; GET /api/documents lists them"
        )
    uploads.delete(svc.store, svc.container, name, datetime.now(UTC))
    return {"name": name, "state": "removed", "detail": "deleted from inputs/; the next run leaves it out"}


@api.get("/api/retrain", response_model=answers.RetrainDefaults)
def retrain_defaults(svc: services.Services = Depends(get_services)) -> answers.RetrainDefaults:
    """What a retrain would train with if its body set nothing: the form's starting values."""
    return run_choices.defaults(svc.settings)


@api.post(
    "/api/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=answers.RetrainQueued,
    dependencies=[Depends(require_caller_allowed)],
)
def retrain(
    body: Any = Body(None, description="TrainChoices: preset, epochs, learning_rate, base_model, sweep_trials"),
    svc: services.Services = Depends(get_services),
) -> dict:
    """Queue a run over every document; the body's fields (each optional) replace the app settings for it."""
    try:
        run = svc.orchestrator.request_retrain(datetime.now(UTC), run_choices.parse(body))
    except run_choices.BadChoices as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from None
    except RunActive as e:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {e} is active; retrain once it has finished") from None
    except NoDocuments as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    return {"run": run.id, "state": run.state, "detail": "the run is submitted on the next timer tick"}


@api.post(
    "/api/rollback",
    response_model=answers.RolledBack,
    dependencies=[Depends(require_caller_allowed)],
)
def roll_back(body: RollbackRequest | None = None, svc: services.Services = Depends(get_services)) -> dict:
    """Move the traffic back to the kept previous deployment; the one that served becomes the rollback target."""
    requested_by = (body or RollbackRequest()).requested_by
    try:
        done = svc.orchestrator.request_rollback(datetime.now(UTC), requested_by)
    except (rollback.NothingToRollBack, rollback.RolloutInProgress) as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    except rollback.RollbackFailed as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(e)) from None
    except (TransientBackendError, PermanentBackendError) as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{e}; nothing changed, try again") from None
    return {**asdict(done), "run": done.run or None}
