"""One local deployment: fetch the registered model from the MLflow registry, then become azmlinfsrv.

`python -m local_stack.deployment MODEL_NAME VERSION MODEL_DIR PORT` runs detached
(started by LocalBackend.begin_deploy), like an AML deployment pulling its model before serving.
It replaces itself with the real AML scoring server (exec), so its pid is the server's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from function_app.settings import child_env
from local_stack.scoring_server import local_server_env

SCORE_SCRIPT = Path(__file__).resolve().parents[1] / "aks_jobs" / "score.py"


def fetch_model(name: str, version: str, model_dir: Path) -> None:
    # Only here: the deployment process, not the control plane, talks to the registry, and through
    # the steps' own tracking module so both find the same store (MLFLOW_TRACKING_URI or the local default).
    import mlflow

    from aks_jobs.lm.tracking import tracking_uri

    if not any(model_dir.rglob("config.json")):
        mlflow.set_tracking_uri(tracking_uri())
        model_dir.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(model_dir))
        print(f"fetched models:/{name}/{version} into {model_dir}", flush=True)


def main(name: str, version: str, model_dir: str, port: str) -> None:
    fetch_model(name, version, Path(model_dir))
    server = Path(sys.executable).parent / "azmlinfsrv"
    env = child_env(
        {
            "AZUREML_MODEL_DIR": model_dir,
            "MODEL_NAME": name,
            "MODEL_VERSION": version,
            # The server reads config.json from its app root: keep that away from the model folder.
            "AML_APP_ROOT": str(SCORE_SCRIPT.parent),
            # Loopback only, and no control socket shared between local servers.
            **local_server_env(),
        }
    )
    argv = [str(server), "--entry_script", str(SCORE_SCRIPT), "--port", port]
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main(*sys.argv[1:5])
