"""The app's functions as the worker indexes them, once per test process.

FunctionApp.get_functions() registers the names it returns and raises on a second call (the
worker calls it exactly once), so tests share one result.
"""

from __future__ import annotations

from functools import lru_cache

import azure.functions as func


@lru_cache(maxsize=1)
def indexed_functions() -> dict[str, func.Function]:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def blob_event(container: str, name: str, event_type: str = "Microsoft.Storage.BlobCreated") -> func.EventGridEvent:
    """What the host hands follow_uploads for a blob event (Event Grid schema, as deploy.sh subscribes):
    the subject names the blob; no bytes come with it."""
    return func.EventGridEvent(
        id="e1",
        data={"api": "PutBlob", "url": f"https://acct.blob.core.windows.net/{container}/inputs/{name}"},
        topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
        subject=f"/blobServices/default/containers/{container}/blobs/inputs/{name}",
        event_type=event_type,
        event_time=None,
        data_version="",
    )
