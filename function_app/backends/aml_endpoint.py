"""The Kubernetes online endpoint and its blue/green deployments, as azure-ai-ml entities.

One endpoint (stable scoring URL) on the AKS compute target; one deployment per registered model version.
azure-ai-ml is imported inside the functions (see aml_pipeline).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aks_jobs.lm.scoring_server_settings import MAX_REQUESTS, REQUEST_TIMEOUT_S, server_env
from function_app.backends.aml_pipeline import AKS_JOBS_DIR, image_environment, registered_environment
from function_app.backends.base import Deployment, PermanentBackendError, SmokeTestFailed
from function_app.run_states import DeploymentState
from function_app.settings import Settings
from pipeline_contracts.scoring import NoGeneration, parse_response

if TYPE_CHECKING:
    from azure.ai.ml.entities import (
        KubernetesOnlineDeployment,
        KubernetesOnlineEndpoint,
        OnlineDeployment,
        OnlineEndpoint,
    )

# aml_token, not key: the token is short-lived and fetched with the caller's Azure identity (RBAC on the
# workspace: onlineEndpoints/token/action), so there is no long-lived secret to store or rotate; keys never
# expire. Clients get tokens as online_endpoints.get_keys does (ui/scoring_token.py). (Kubernetes online
# endpoints do not support aad_token.)
AUTH_MODE = "aml_token"
INSTANCE_COUNT = 1
# Import torch + transformers and load GPT-2's weights take up to a minute on a cold CPU pod: probes start
# late and tolerate a slow start instead of restarting the container in a loop.
LIVENESS_PROBE = {"initial_delay": 60, "period": 10, "timeout": 10, "failure_threshold": 30, "success_threshold": 1}
READINESS_PROBE = {"initial_delay": 30, "period": 10, "timeout": 10, "failure_threshold": 30, "success_threshold": 1}
# As many requests in flight as the server takes at once (see scoring_server_settings); AML queues the rest. Long
# generations on CPU need well over the 5 s default timeout.
REQUEST_SETTINGS = {
    "max_concurrent_requests_per_instance": MAX_REQUESTS,
    "request_timeout_ms": REQUEST_TIMEOUT_S * 1000,
}

# AML deployment names: 3-32 characters, a letter first, then letters, digits and '-'.
_NAME_MAX = 32
_VALID_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_ARM_MODEL = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
_SHORT_MODEL = re.compile(r"^azureml:(?P<name>[^:/]+):(?P<version>[^:/]+)$")

# provisioning_state -> Deployment.state; anything else is still on its way.
_READY = {"Succeeded"}
_FAILED = {"Failed", "Canceled", "Deleting"}  # Deleting: going away, it will never take requests


def deployment_name(model_name: str, model_version: str) -> str:
    """e.g. gpt2-pdf-v12: the model's name (shortened if need be) and version, valid as a deployment name."""
    suffix = "-v" + re.sub(r"[^a-z0-9]+", "-", str(model_version).lower()).strip("-")
    prefix = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-").lstrip("0123456789-") or "model"
    name = prefix[: _NAME_MAX - len(suffix)].rstrip("-") + suffix
    if not _VALID_NAME.match(name):
        raise PermanentBackendError(
            f"model version {model_version!r} of {model_name!r} gives no valid deployment "
            f"name ({name!r}); versions are expected to be short, like '12'"
        )
    return name


def model_of(reference: str) -> tuple[str, str]:
    """(name, version) from a deployment's model: an ARM id (what AML returns) or azureml:<name>:<version>."""
    match = _ARM_MODEL.search(reference) or _SHORT_MODEL.match(reference)
    return (match["name"], match["version"]) if match else ("unknown", "unknown")


def build_endpoint(settings: Settings) -> KubernetesOnlineEndpoint:
    from azure.ai.ml.entities import KubernetesOnlineEndpoint

    return KubernetesOnlineEndpoint(
        name=settings.aml_endpoint_name,
        compute=settings.aml_compute,
        auth_mode=AUTH_MODE,
        description=f"Stable scoring URL for {settings.model_name}; traffic goes to the promoted deployment",
        tags={"model_name": settings.model_name},
    )


def build_deployment(
    settings: Settings, name: str, model_name: str, model_version: str, run_id: str
) -> KubernetesOnlineDeployment:
    from azure.ai.ml.entities import CodeConfiguration, KubernetesOnlineDeployment, OnlineRequestSettings, ProbeSettings

    image = settings.aml_environment_image
    return KubernetesOnlineDeployment(
        name=name,
        endpoint_name=settings.aml_endpoint_name,
        model=f"azureml:{model_name}:{model_version}",
        code_configuration=CodeConfiguration(code=str(AKS_JOBS_DIR), scoring_script="score.py"),
        environment=image_environment(image) if image else registered_environment(),
        # score.py names the model it serves from these (the mounted folder name is not the registry name).
        environment_variables={"MODEL_NAME": model_name, "MODEL_VERSION": str(model_version), **server_env()},
        instance_type=settings.aml_cpu_instance_type,
        instance_count=INSTANCE_COUNT,
        request_settings=OnlineRequestSettings(**REQUEST_SETTINGS),
        liveness_probe=ProbeSettings(**LIVENESS_PROBE),
        readiness_probe=ProbeSettings(**READINESS_PROBE),
        tags={"run_id": run_id, "model_name": model_name, "model_version": str(model_version)},
    )


def to_deployment(deployment: OnlineDeployment, endpoint: OnlineEndpoint) -> Deployment:
    """Our view of an OnlineDeployment entity, with its traffic share from the endpoint."""
    model_name, model_version = model_of(str(deployment.model))
    state = deployment.provisioning_state
    return Deployment(
        name=deployment.name,
        model_name=model_name,
        model_version=model_version,
        scoring_url=endpoint.scoring_uri or "",
        traffic=int(endpoint.traffic.get(deployment.name, 0)),
        state=(
            DeploymentState.READY
            if state in _READY
            else DeploymentState.FAILED
            if state in _FAILED
            else DeploymentState.CREATING
        ),
    )


def generated_text(response: str) -> str:
    """The first generation in a scoring response; raise SmokeTestFailed when there is none."""
    try:
        return parse_response(response).text
    except NoGeneration:
        raise SmokeTestFailed(f"smoke test: the deployment answered without generations: {response[:300]!r}") from None
