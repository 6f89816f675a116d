"""The Azure Functions (Python v2 model): wiring only; the work is in uploads and orchestrator.

- follow_uploads: Event Grid trigger for the storage account's BlobCreated / BlobDeleted events under
  <container>/inputs/ -> records the upload (one streamed read to hash it) or marks it removed,
  idempotently (delivery is at-least-once). Not a blob trigger: that hands the worker the whole blob
  (func.InputStream) before the function runs. Without Event Grid (Azurite) the timer's scan follows
  inputs/ instead.
- advance_pipeline: timer on %TIMER_SCHEDULE% -> Orchestrator.tick.
- http_app_func: the FastAPI app (function_app.api) behind the host's HTTP trigger.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from function_app import services, uploads
from function_app.api import api

app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("follow_uploads")
@app.event_grid_trigger(arg_name="event")
def follow_uploads(event: func.EventGridEvent) -> None:
    svc = services.get()
    uploads.follow_event(
        svc.store, svc.container, svc.settings.data_container, event.event_type, event.subject, datetime.now(UTC)
    )


@app.function_name("advance_pipeline")
@app.timer_trigger(arg_name="timer", schedule="%TIMER_SCHEDULE%", run_on_startup=False, use_monitor=True)
def advance_pipeline(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("timer is past due; ticking now")
    run = services.get().orchestrator.tick(datetime.now(UTC))
    if run is not None:
        logging.info("run %s is %s", run.id, run.state)
