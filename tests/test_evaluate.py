"""The evaluate step: the promotion gate, scoring on held-out text, and MLflow registration with tags."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
from tiny_model import make_tiny_model

from aks_jobs import evaluate as evaluate_step
from aks_jobs.lm.evaluation import EvaluateRequest, evaluate
from aks_jobs.lm.gate import Rules, decide
from aks_jobs.lm.model_card import build_card, markdown
from aks_jobs.lm.perplexity import TextScore
from aks_jobs.lm.training import TrainRequest, train
from pipeline_contracts.evaluation import Evaluation, RegisteredModel
from pipeline_contracts.model_card import MAX_LISTED
from synthetic_data.prose import prose, stamp_digest, write_snapshot
from tests import contract_samples

REPO = Path(__file__).resolve().parents[1]


def score(bits_per_byte: float, perplexity: float = 10.0) -> TextScore:
    return TextScore(loss=2.3, perplexity=perplexity, bits_per_byte=bits_per_byte, tokens=100, bytes=400)


# --- the gate -----------------------------------------------------------------------------------


def test_gate_promotes_the_first_model_and_only_real_improvements() -> None:
    first = decide(score(1.5), None, Rules())
    assert first.decision == "promote" and "no model is serving" in first.reason and "1.5000 bits/byte" in first.reason

    better = decide(score(1.2), score(1.5), Rules())
    assert better.decision == "promote" and better.improvement == pytest.approx(0.2)
    assert "20.0%" in better.reason and "1.2000" in better.reason and "1.5000" in better.reason

    same = decide(score(1.5), score(1.5), Rules())
    assert same.decision == "reject" and "the serving model stays" in same.reason

    small = decide(score(1.45), score(1.5), Rules(min_improvement=0.05))
    assert small.decision == "reject" and "at least 5.0%" in small.reason


def test_gate_caps_perplexity_even_without_a_serving_model() -> None:
    capped = decide(score(1.0, perplexity=80.0), None, Rules(max_perplexity=50))
    assert capped.decision == "reject" and "80.00" in capped.reason and "limit 50" in capped.reason
    assert decide(score(1.0, perplexity=40.0), None, Rules(max_perplexity=50)).decision == "promote"


# --- real models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="module")
def trained(tmp_path_factory, store) -> dict[str, Path]:
    """Two offline models on one snapshot: 'weak' after 1 step, 'strong' after 40 (same held-out text)."""
    root = tmp_path_factory.mktemp("train")
    write_snapshot(root / "processed", "20250101_000000", [prose(20, 50), prose(21, 50)])
    models = {}
    for name, steps in (("weak", 1), ("strong", 40)):
        models[name] = root / name
        train(
            TrainRequest(
                data=root / "processed",
                output=models[name],
                base_model="offline",
                overrides={"block_size": 64, "grad_accum": 1, "max_steps": steps, "best_epoch": False},
                experiment="eval-tests",
            )
        )
    assert json.loads((models["weak"] / "heldout.json").read_text()) == json.loads(
        (models["strong"] / "heldout.json").read_text()
    )
    return models


def version_tags(name: str, version: str) -> dict[str, str]:
    return mlflow.MlflowClient().get_model_version(name, version).tags


def test_first_candidate_is_promoted_and_registered_with_tags(trained, store, tmp_path: Path) -> None:
    evaluation = evaluate(
        EvaluateRequest(model=trained["strong"], output=tmp_path, model_name="first", experiment="eval-tests")
    )

    assert evaluation.decision == "promote" and evaluation.serving is None
    assert evaluation.snapshot == "combined_data_20250101_000000.txt"
    assert evaluation.documents_sha256 == stamp_digest("20250101_000000")
    assert evaluation.candidate.perplexity > 1 and evaluation.candidate.bits_per_byte > 0
    assert Evaluation.model_validate_json((tmp_path / "evaluation.json").read_text()) == evaluation
    assert evaluation.registered == RegisteredModel(name="first", version="1")
    # The train summary rides along: the control plane's run metrics (loss curve included) on AML.
    assert evaluation.training.snapshot == "combined_data_20250101_000000.txt"
    assert evaluation.training.log_history

    tags = version_tags("first", "1")
    assert tags["decision"] == "promote" and tags["snapshot"] == "combined_data_20250101_000000.txt"
    assert tags["documents_sha256"] == stamp_digest("20250101_000000") and tags["base_model_kind"] == "offline"
    assert float(tags["candidate_perplexity"]) == pytest.approx(evaluation.candidate.perplexity)
    files = mlflow.artifacts.download_artifacts("models:/first/1", dst_path=str(tmp_path / "download"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "heldout.json", "MODEL_CARD.md"} <= {
        p.name for p in Path(files).iterdir()
    }
    # The base model on the same test text, before fine-tuning: what fine-tuning bought.
    baseline = evaluation.baseline
    assert baseline.tokens == evaluation.candidate.tokens and baseline.perplexity > evaluation.candidate.perplexity
    assert float(tags["baseline_perplexity"]) == pytest.approx(baseline.perplexity)
    # The model card: in evaluation.json, as tags and as MODEL_CARD.md with the files.
    card = evaluation.card
    today = datetime.now(UTC).strftime("%Y.%m.%d")
    assert card.revision == tags["revision"] == f"{today}-1" and card.version == "1"
    assert card.documents_total == 2 and card.documents[0].name == "doc0.pdf" and len(card.documents[0].sha256) == 64
    assert card.test_perplexity == evaluation.candidate.perplexity and card.baseline_perplexity == baseline.perplexity
    assert card.serving_perplexity is None and card.decision == "promote" and card.reason == evaluation.reason
    assert card.hyperparameters["max_steps"] == 40 and tags["hp.learning_rate"] == "0.001" and tags["documents"] == "2"
    assert "English" in tags["limits"] and "completes text" in tags["limits"]
    text = (Path(files) / "MODEL_CARD.md").read_text()
    assert f"# first {today}-1 (version 1)" in text and card.documents[0].sha256 in text
    assert f"{baseline.perplexity:.2f}" in text and "does not answer questions" in text


def test_candidate_worse_than_serving_is_rejected_but_registered(trained, store, tmp_path: Path) -> None:
    evaluation = evaluate(
        EvaluateRequest(
            model=trained["weak"],
            output=tmp_path,
            serving_model=trained["strong"],
            model_name="contest",
            experiment="eval-tests",
        )
    )

    assert evaluation.decision == "reject" and "the serving model stays" in evaluation.reason
    assert evaluation.serving.bits_per_byte < evaluation.candidate.bits_per_byte
    assert f"{evaluation.serving.bits_per_byte:.4f}" in evaluation.reason
    tags = version_tags("contest", evaluation.registered.version)
    assert tags["decision"] == "reject" and float(tags["serving_bits_per_byte"]) == pytest.approx(
        evaluation.serving.bits_per_byte
    )


def test_serving_model_with_another_tokenizer_is_compared_per_byte(trained, store, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "serving")  # its own 300-token vocabulary, random weights
    evaluation = evaluate(
        EvaluateRequest(model=trained["strong"], output=tmp_path / "eval", serving_model=other, register=False)
    )
    assert evaluation.decision == "promote" and evaluation.improvement > 0
    blocks = json.loads((trained["strong"] / "heldout.json").read_text())["blocks"]
    text_bytes = sum(len(block.encode()) for block in blocks)
    for scored in (evaluation.candidate, evaluation.serving):  # the same text; each block's first token
        assert text_bytes - 8 * len(blocks) <= scored.bytes < text_bytes  # is context, not predicted
    assert evaluation.candidate.tokens != evaluation.serving.tokens
    assert evaluation.registered is None


def test_candidate_over_max_perplexity_is_rejected(trained, store, tmp_path: Path) -> None:
    evaluation = evaluate(
        EvaluateRequest(
            model=trained["strong"],
            output=tmp_path,
            rules=Rules(max_perplexity=1.0),
            model_name="capped",
            experiment="eval-tests",
        )
    )
    assert evaluation.decision == "reject" and "above the limit 1" in evaluation.reason
    assert version_tags("capped", evaluation.registered.version)["decision"] == "reject"


def test_cli_writes_evaluation_without_registering(trained, store, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "aks_jobs" / "evaluate.py"),
            "--model",
            str(trained["weak"]),
            "--serving-model",
            str(trained["strong"]),
            "--output",
            str(tmp_path),
            "--no-register",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = Evaluation.model_validate_json((tmp_path / "evaluation.json").read_text())
    assert evaluation.decision == "reject" and evaluation.registered is None
    assert result.stdout.startswith("reject: Rejected:")


def test_cli_exits_2_for_a_folder_that_is_no_train_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert evaluate_step.main(["--model", str(tmp_path), "--output", str(tmp_path)]) == 2
    assert "pass a train.py output folder" in caplog.text and not (tmp_path / "evaluation.json").exists()


def test_revisions_count_the_versions_registered_that_day_and_the_card_names_the_sweeps_choice(
    trained, store, tmp_path: Path
) -> None:
    swept = tmp_path / "swept"
    shutil.copytree(trained["strong"], swept)
    summary = json.loads((swept / "train_summary.json").read_text())
    trial = {"dev_losses": [3.1], "stopped_early": False, "dev_loss": 3.1, "mlflow_run_id": None, "error": None}
    summary["sweep"] = {
        "primary_metric": "dev_loss",
        "goal": "minimize",
        "space": {},
        "bandit": {},
        "chosen_trial": 2,
        "mlflow_run_id": None,
        "trials": [{**trial, "trial": 1, "settings": {}}, {**trial, "trial": 2, "settings": {"learning_rate": 0.002}}],
    }
    (swept / "train_summary.json").write_text(json.dumps(summary))

    first = evaluate(
        EvaluateRequest(model=trained["weak"], output=tmp_path / "a", model_name="daily", experiment="eval-tests")
    )
    second = evaluate(EvaluateRequest(model=swept, output=tmp_path / "b", model_name="daily", experiment="eval-tests"))

    today = datetime.now(UTC).strftime("%Y.%m.%d")
    assert (first.card.revision, second.card.revision) == (f"{today}-1", f"{today}-2")
    assert second.card.sweep_choice == {"chosen_trial": 2, "trials": 2, "learning_rate": 0.002}
    assert version_tags("daily", second.registered.version)["sweep_chosen_trial"] == "2"


def test_a_card_of_thousands_of_documents_still_fits_the_run_record() -> None:
    documents = [{"name": f"reports/2026/quarterly-report-{i:05d}.pdf", "sha256": f"{i:064x}"} for i in range(5000)]
    result = Evaluation.model_validate(contract_samples.evaluation())
    card = build_card(result, "gpt2-pdf", "7", "2026.11.30-3", datetime(2026, 11, 30, tzinfo=UTC), documents)

    assert card.documents_total == 5000 and len(card.documents) == MAX_LISTED
    stored = result.model_copy(update={"card": card}).model_dump(mode="json", exclude={"training"})
    assert len(json.dumps(stored)) < 30_000  # the orchestrator keeps it in one status-table property
    assert documents[-1]["sha256"] in markdown(card, documents)  # the file lists every one
    assert "| a\\|b.pdf |" in markdown(card, [{"name": "a|b.pdf", "sha256": "0" * 64}])  # still one cell
