"""The Azure Functions (Python v2 model): wiring only; the work is in uploads and orchestrator.

- record_upload: blob trigger on <container>/inputs/{name} (Event Grid source in Azure, polling with
  Azurite) -> records the upload, idempotently (triggers are at-least-once).
- advance_pipeline: timer on %TIMER_SCHEDULE% -> Orchestrator.tick.
- http_app_func: the FastAPI app (function_app.api) behind the host's HTTP trigger.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import azure.functions as func

from function_app import services, uploads
from function_app.api import api
from function_app.settings import STORAGE_CONNECTION, Settings, setting_name

_settings = Settings.from_env()


def _blob_source(settings: Settings) -> func.BlobSource:
    try:
        return func.BlobSource(settings.blob_trigger_source)
    except ValueError:
        allowed = ", ".join(s.value for s in func.BlobSource)
        raise ValueError(
            f"{setting_name('blob_trigger_source')}={settings.blob_trigger_source!r} is not a blob trigger source; "
            f"use one of {allowed}"
        ) from None


app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("record_upload")
@app.blob_trigger(
    arg_name="blob",
    path=f"{_settings.data_container}/inputs/{{name}}",
    connection=STORAGE_CONNECTION,
    source=_blob_source(_settings),
)
def record_upload(blob: func.InputStream) -> None:
    svc = services.get()
    name = uploads.input_name(blob.name, svc.settings.data_container)
    uploads.record(svc.store, svc.container, name, datetime.now(timezone.utc))


@app.function_name("advance_pipeline")
@app.timer_trigger(arg_name="timer", schedule="%TIMER_SCHEDULE%", run_on_startup=False, use_monitor=True)
def advance_pipeline(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("timer is past due; ticking now")
    run = services.get().orchestrator.tick(datetime.now(timezone.utc))
    if run is not None:
        logging.info("run %s is %s", run.id, run.state)
