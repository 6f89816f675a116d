"""Valid job outputs for tests that stand in for the jobs, as the steps write them (pipeline_contracts): a train
summary, an evaluation, a scoring answer, a snapshot with its manifest and a run's snapshot reference."""

from __future__ import annotations

from typing import Any

from azure.storage.blob import ContainerClient

from pipeline_contracts import snapshot_ref
from pipeline_contracts.blob_layout import PROCESSED, SNAPSHOT_REF_OUTPUT, manifest_file, run_output
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.model_card import ModelCard
from pipeline_contracts.scoring import ScoreResponse
from pipeline_contracts.snapshot_manifest import DocumentEntry, SnapshotManifest, Totals
from pipeline_contracts.snapshot_ref import SnapshotRef
from pipeline_contracts.train_summary import TrainSummary


def train_summary(**figures: Any) -> dict[str, Any]:
    """train_summary.json of a short offline run; `figures` replace its fields (e.g. perplexity=12.5)."""
    summary = {
        "snapshot": "combined_data_20261123_101500.txt",
        "snapshot_path": "/mnt/processed/combined_data_20261123_101500.txt",
        "documents_sha256": "ab" * 32,
        "documents": 1,
        "base_model": {"requested": "offline", "resolved": "offline", "kind": "offline"},
        "preset": "memorize",
        "hyperparameters": {"epochs": 1.0},
        "train_loss": 2.7,
        "final_loss": 2.6,
        "eval_loss": 2.49,
        "perplexity": 12.06,
        "eval_bits_per_byte": 1.2,
        "eval_tokens": 100,
        "steps": 2,
        "epochs": 1.0,
        "train_tokens": 2048,
        "tokens_per_s": 1000.0,
        "train_runtime_s": 2.0,
        "wall_s": 3.0,
        "device": "cpu",
        "ddp_backend": None,
        "precision": "fp32",
        "attention": "sdpa",
        "execution": {},
        "blocks": {"train": 4, "eval": 1, "split": None},
        "mlflow_run_id": "run-1",
        "log_history": [{"step": 1, "loss": 3.1}, {"step": 2, "loss": 2.7}],
    }
    return TrainSummary.model_validate({**summary, **figures}).model_dump(mode="json")


def _score(perplexity: float, model: str) -> dict[str, Any]:
    return {"model": model, "loss": 2.5, "perplexity": perplexity, "bits_per_byte": 1.2, "tokens": 100, "bytes": 400}


def evaluation(
    decision: str = "promote",
    *,
    candidate: float = 12.5,
    serving: float | None = 20.1,
    registered: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """evaluation.json with these candidate and serving perplexities; `fields` replace the rest."""
    result = {
        "decision": decision,
        "reason": f"perplexity {candidate} against {serving}",
        "candidate": _score(candidate, "/mnt/model"),
        "serving": None if serving is None else _score(serving, "/mnt/serving"),
        "improvement": None,
        "rules": {"min_improvement": 0.0, "max_perplexity": None},
        "heldout_blocks": 1,
        "split": None,
        "snapshot": "combined_data_20261123_101500.txt",
        "documents_sha256": "ab" * 32,
        "registered": registered,
        "training": train_summary(perplexity=candidate, log_history=[]),  # a run that logged no step
    }
    return Evaluation.model_validate({**result, **fields}).model_dump(mode="json")


def model_card(**fields: Any) -> dict[str, Any]:
    """A registered version's model card; `fields` replace its facts."""
    card = {
        "name": "gpt2-pdf",
        "version": "1",
        "revision": "2026.11.30-1",
        "registered_utc": "2026-11-30T10:00:00Z",
        "snapshot": "combined_data_20261123_101500.txt",
        "documents_sha256": "ab" * 32,
        "documents_total": 1,
        "documents": [{"name": "archive.pdf", "sha256": "cd" * 32}],
        "base_model": "gpt2",
        "preset": "default",
        "hyperparameters": {"epochs": 3.0, "learning_rate": 5e-5},
        "sweep_choice": {"chosen_trial": 2, "trials": 3, "learning_rate": 5e-5},
        "split": None,
        "test_perplexity": 12.5,
        "baseline_perplexity": 40.0,
        "baseline_bits_per_byte": 2.0,
        "serving_perplexity": None,
        "serving_bits_per_byte": None,
        "test_bits_per_byte": 1.1,
        "decision": "promote",
        "reason": "Promoted: no model is serving.",
    }
    return ModelCard.model_validate({**card, **fields}).model_dump(mode="json")


def score_response(text: str, version: str = "3") -> str:
    """A scoring endpoint's JSON answer with this one greedy continuation."""
    return ScoreResponse(
        generations=[[text]],
        model={"name": "gpt2-pdf", "version": version, "weights": "fp32"},
        usage={"prompt_tokens": 4, "completion_tokens": 8},
        parameters={"do_sample": False},
    ).model_dump_json()


def manifest(snapshot: str, outcomes: dict[str, tuple[str, str, list[str]]]) -> SnapshotManifest:
    """A snapshot's manifest: outcomes {name: (sha256, status, messages)}."""
    entries = [
        DocumentEntry(
            name=name,
            sha256=sha256,
            bytes=10,
            pages=2,
            chars=40,
            status=status,
            messages=messages,
            cached=False,
            seconds=0.1,
        )
        for name, (sha256, status, messages) in outcomes.items()
    ]
    return SnapshotManifest(
        snapshot=snapshot,
        created_utc="2099-12-31T23:59:59Z",
        documents_sha256="0" * 64,
        documents=entries,
        totals=Totals(
            documents=len(entries),
            ok=sum(e.status == "ok" for e in entries),
            warning=sum(e.status == "warning" for e in entries),
            error=sum(e.status == "error" for e in entries),
            pages=sum(e.pages for e in entries),
            chars=sum(e.chars for e in entries),
        ),
    )


def write_snapshot_blobs(
    container: ContainerClient, snapshot: str, outcomes: dict[str, tuple[str, str, list[str]]]
) -> None:
    """processed/<snapshot> and its manifest as preprocess writes them: outcomes {name: (sha256, status, messages)}."""
    container.upload_blob(PROCESSED + snapshot, b"text", overwrite=True)
    container.upload_blob(
        PROCESSED + manifest_file(snapshot), manifest(snapshot, outcomes).model_dump_json(), overwrite=True
    )


def name_snapshot(container: ContainerClient, run_id: str, snapshot: str) -> None:
    """What a run's preprocess step leaves in its snapshot output (runs/<run id>/snapshot/)."""
    container.upload_blob(
        run_output(run_id, SNAPSHOT_REF_OUTPUT) + snapshot_ref.FILE_NAME,
        SnapshotRef(snapshot=snapshot).model_dump_json(),
        overwrite=True,
    )
