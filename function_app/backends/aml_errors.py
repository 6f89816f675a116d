"""Azure SDK exceptions -> TransientBackendError (retry later) or PermanentBackendError (the run fails)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core import exceptions as azure_core

from function_app.backends.base import PermanentBackendError, TransientBackendError

# Throttling, timeouts, server errors, and 409 Conflict, which AML answers while an endpoint or deployment
# is still being updated by an earlier request.
TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_MESSAGE_MAX = 400


@contextmanager
def azure_errors(action: str) -> Iterator[None]:
    """Translate what the Azure SDKs raise inside the block; `action` says what was being done."""
    from azure.ai.ml.exceptions import MlException

    try:
        yield
    except (TransientBackendError, PermanentBackendError):
        raise
    except azure_core.ClientAuthenticationError as err:  # 401/403, and no usable credential at all
        raise PermanentBackendError(
            f"{action}: not authorized ({_summary(err)}); give the Function app's managed identity the "
            f"'AzureML Data Scientist' role on the workspace"
        ) from err
    except azure_core.ResourceNotFoundError as err:
        raise PermanentBackendError(
            f"{action}: not found ({_summary(err)}); check AML_SUBSCRIPTION_ID, AML_RESOURCE_GROUP, "
            f"AML_WORKSPACE and the names in the AML_* settings"
        ) from err
    except azure_core.HttpResponseError as err:
        status = err.status_code
        if status in TRANSIENT_STATUS:
            raise TransientBackendError(f"{action}: HTTP {status} ({_summary(err)})") from err
        raise PermanentBackendError(f"{action}: HTTP {status} ({_summary(err)})") from err
    except (azure_core.ServiceRequestError, azure_core.ServiceResponseError, TimeoutError, ConnectionError) as err:
        # The request never reached Azure or its answer was lost: network, DNS, timeouts.
        raise TransientBackendError(f"{action}: {type(err).__name__}: {_summary(err)}") from err
    except MlException as err:  # azure-ai-ml's own checks (validation, missing files, job state)
        raise PermanentBackendError(f"{action}: {_summary(err)}") from err


def _summary(err: Exception) -> str:
    """First non-empty line of the error (AML repeats code and message below it), capped."""
    text = str(getattr(err, "message", None) or err)
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return line if len(line) <= _MESSAGE_MAX else line[: _MESSAGE_MAX - 3] + "..."
