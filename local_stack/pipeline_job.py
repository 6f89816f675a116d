"""The local pipeline job: a detached process running preprocess -> train -> evaluate.

`python -m local_stack.pipeline_job JOB_DIR` reads JOB_DIR/job.json (written by
LocalBackend.submit), mirrors inputs/ from the data container, runs each component's own command
line (local_components) with cwd = the component's code folder, syncs processed/ back to the
container, and keeps JOB_DIR/state.json current so job_status can answer without asking it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from azure.storage.blob import ContainerClient

from function_app.run_states import JobState
from function_app.settings import StorageConnection, child_env
from function_app.storage import blob_service
from local_stack import components as local_components
from pipeline_contracts.blob_layout import INPUTS, PROCESSED, SNAPSHOT_REF_OUTPUT, run_output

log = logging.getLogger("local_job")


@dataclass
class JobSpec:
    run_id: str
    container: str
    processed_dir: str  # persistent across jobs, like AML's read-write mount of processed/
    preprocess_inputs: dict = field(default_factory=dict)
    train_inputs: dict = field(default_factory=dict)
    evaluate_inputs: dict = field(default_factory=dict)

    @classmethod
    def read(cls, job_dir: Path) -> JobSpec:
        return cls(**json.loads((job_dir / "job.json").read_text()))

    def write(self, job_dir: Path) -> None:
        write_json(job_dir / "job.json", asdict(self))


def write_json(path: Path, data: dict) -> None:
    """Atomic: readers (another process) see the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def set_state(job_dir: Path, state: JobState, **extra) -> None:
    write_json(job_dir / "state.json", {"state": state, "updated_at": datetime.now(UTC).isoformat(), **extra})
    log.info("job %s: %s %s", job_dir.name, state, extra.get("error", ""))


def inside(target: Path, relative: str) -> Path | None:
    """target/relative, or None when that path would leave target (.., absolute parts, links)."""
    root = target.resolve()
    path = (root / relative).resolve()
    return path if path != root and path.is_relative_to(root) else None


def download_tree(
    container: ContainerClient, prefix: str, target: Path, only_missing: bool
) -> tuple[int, dict[str, str]]:
    """Copy every blob under `prefix` into `target`. One blob at a time: a blob that cannot be copied
    (a name that leaves the folder, a failing read) is skipped and returned with the reason."""
    count, skipped = 0, {}
    for blob in container.list_blobs(name_starts_with=prefix):
        path = None
        try:
            path = inside(target, blob.name.removeprefix(prefix))
            if path is None:
                skipped[blob.name] = "its name points outside the job folder ('..' or an absolute path); not copied"
            elif not (only_missing and path.exists()):
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    container.download_blob(blob.name).readinto(f)
                count += 1
        except Exception as e:  # noqa: BLE001 - the other blobs still go into the run
            if path is not None:
                with contextlib.suppress(OSError):  # no half file left behind, if there is one
                    path.unlink(missing_ok=True)
            skipped[blob.name] = f"could not be copied ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
        if blob.name in skipped:
            log.warning("skipped %s: %s", blob.name, skipped[blob.name])
    return count, skipped


def drop_deleted(container: ContainerClient, prefix: str, target: Path) -> int:
    """Delete local copies of blobs no longer in the container (pruned snapshots, purged cache entries),
    so that upload_missing never brings them back."""
    present = {b.name.removeprefix(prefix) for b in container.list_blobs(name_starts_with=prefix)}
    dropped = 0
    for path in sorted(p for p in target.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        if path.relative_to(target).as_posix() not in present:
            path.unlink()
            dropped += 1
    return dropped


def upload_missing(container: ContainerClient, source: Path, prefix: str) -> int:
    """Upload files not yet in the container (snapshots and cache entries are immutable: names suffice)."""
    present = {b.name for b in container.list_blobs(name_starts_with=prefix)}
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        name = prefix + path.relative_to(source).as_posix()
        if name not in present:
            with open(path, "rb") as f:
                container.upload_blob(name, f, overwrite=False)
            count += 1
    return count


def run_step(job_dir: Path, step: str, inputs: dict, outputs: dict, env: dict[str, str]) -> None:
    component = local_components.load(step)
    argv = component.argv(inputs, outputs)
    log_path = job_dir / "logs" / f"{step}.log"
    log_path.parent.mkdir(exist_ok=True)
    for out in outputs.values():
        Path(out).mkdir(parents=True, exist_ok=True)
    log.info("%s: %s (log %s)", step, " ".join(argv), log_path)
    with open(log_path, "ab") as out:
        code = subprocess.call(argv, cwd=component.code_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise StepFailed(step, code, log_path)


class StepFailed(Exception):
    def __init__(self, step: str, code: int, log_path: Path):
        lines = log_path.read_text(errors="replace").strip().splitlines()[-12:]
        super().__init__(f"{step} failed (exit {code}); log {log_path}:\n" + "\n".join(lines))


def run(job_dir: Path) -> None:
    spec = JobSpec.read(job_dir)
    container = blob_service(StorageConnection.from_env()).get_container_client(spec.container)
    # `python` in the component commands must be this interpreter (the job image's python in AML).
    # MLFLOW_TRACKING_URI, when configured, comes with the environment the backend gave this process.
    env = child_env({}, path_first=str(Path(sys.executable).parent))
    processed = Path(spec.processed_dir)
    documents = job_dir / "inputs"
    model, evaluation, snapshot = job_dir / "model", job_dir / "evaluation", job_dir / SNAPSHOT_REF_OUTPUT
    try:
        set_state(job_dir, JobState.PREPROCESSING)
        # Skipped blobs are logged here; the control plane's scan reports them in /api/status.
        count, skipped = download_tree(container, INPUTS, documents, only_missing=False)
        if processed.exists():
            drop_deleted(container, PROCESSED, processed)
        download_tree(container, PROCESSED, processed, only_missing=True)
        log.info("%d documents from %s/%s (%d skipped)", count, spec.container, INPUTS, len(skipped))
        run_step(
            job_dir,
            "preprocess",
            {"documents": str(documents), **spec.preprocess_inputs},
            {"processed": str(processed), "snapshot": str(snapshot)},
            env,
        )
        log.info("uploaded %d new files to %s", upload_missing(container, processed, PROCESSED), PROCESSED)
        upload_missing(container, snapshot, run_output(spec.run_id, SNAPSHOT_REF_OUTPUT))  # as AML's output binding

        set_state(job_dir, JobState.TRAINING)
        run_step(
            job_dir,
            "train",
            {"processed": str(processed), "snapshot": str(snapshot), **spec.train_inputs},
            {"model": str(model)},
            env,
        )

        set_state(job_dir, JobState.EVALUATING)
        run_step(
            job_dir, "evaluate", {"model": str(model), **spec.evaluate_inputs}, {"evaluation": str(evaluation)}, env
        )
        set_state(job_dir, JobState.COMPLETED)
    except StepFailed as e:
        set_state(job_dir, JobState.FAILED, error=str(e))
    except Exception as e:  # noqa: BLE001 - whatever broke, the run must learn why
        log.exception("local job failed")
        set_state(job_dir, JobState.FAILED, error=f"local job runner: {type(e).__name__}: {e}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # not every HTTP request to storage
    run(Path(sys.argv[1]))
