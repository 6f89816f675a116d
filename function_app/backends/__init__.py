"""Pipeline backends: `local` (processes on this machine, the local_stack package) and `aml` (Azure ML on AKS).

Each is imported only when chosen, so the Function app never loads azure-ai-ml unless it uses it, and the
published Function package, which leaves local_stack/ out, never needs it.
"""

from __future__ import annotations

from function_app.backends.base import PipelineBackend
from function_app.settings import Settings, setting_name

BACKENDS = ("local", "aml")


def create_backend(settings: Settings) -> PipelineBackend:
    if settings.pipeline_backend == "local":
        try:
            from local_stack.backend import LocalBackend
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("local_stack"):
                raise
            raise ValueError(
                f"{setting_name('pipeline_backend')}=local needs the local_stack package, which the published "
                "Function app leaves out (.funcignore); in Azure use aml"
            ) from None

        return LocalBackend(settings)
    if settings.pipeline_backend == "aml":
        from function_app.backends.aml import AmlBackend

        return AmlBackend(settings)
    raise ValueError(
        f"{setting_name('pipeline_backend')}={settings.pipeline_backend!r} is not a backend; "
        f"use one of {', '.join(BACKENDS)}"
    )
