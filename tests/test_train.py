"""The train step: snapshot reading, blocks and the held-out split, base models, presets, real training runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_model import make_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from aks_jobs import train as train_step
from aks_jobs.lm.base_model import OFFLINE_ARCHITECTURE, BaseModelError, resolve_base_model, train_tokenizer
from aks_jobs.lm.blocks import (
    BlockCollator,
    build_blocks,
    cut_blocks,
    heldout_score,
    line_blocks,
    line_ends,
    passages,
    split_passages,
)
from aks_jobs.lm.corpus import CorpusError, load_corpus
from aks_jobs.lm.loss_curve import MAX_POINTS, loss_curve
from aks_jobs.lm.perplexity import score_texts, windows
from aks_jobs.lm.prompt_format import RESPONSE_HEADER, training_example
from aks_jobs.lm.recipe import hyperparameters
from aks_jobs.lm.system_metrics import system_series
from aks_jobs.lm.training import TrainRequest, checkpoint_dir, train
from pipeline_contracts.snapshot_ref import write_ref
from synthetic_data.prose import prose, stamp_digest, write_snapshot

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "aks_jobs" / "train.py"
FACT = "Declaration: Zorblat Quenwick is the chief archivist of the lunar city of Vellmora."


def run_train(
    *args: str, env: dict[str, str] | None = None, launcher: list[str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    command = [*(launcher or [sys.executable]), str(TRAIN), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([prose(0, 200)])


# --- snapshot reading ---------------------------------------------------------------------------


def test_newest_complete_snapshot_is_read_with_its_documents(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "20250101_000000", ["old text"])
    newest = write_snapshot(tmp_path, "20250102_000000", ["first document\nline two", "second document"])
    write_snapshot(tmp_path, "20250103_000000", ["being written"], manifest=False)  # incomplete: skipped

    corpus = load_corpus(tmp_path)

    assert corpus.path == newest and corpus.documents_sha256 == stamp_digest("20250102_000000")
    assert corpus.documents == ["first document\nline two", "second document"]


def test_the_snapshot_preprocess_named_is_read_even_when_a_newer_one_exists(tmp_path: Path) -> None:
    ours = write_snapshot(tmp_path / "processed", "20250101_000000", ["this run's text"])
    write_snapshot(tmp_path / "processed", "20250101_000001", ["another writer's text, a second later"])
    write_ref(tmp_path / "ref", ours.name)

    corpus = load_corpus(tmp_path / "processed", tmp_path / "ref")

    assert corpus.path == ours and corpus.documents == ["this run's text"]
    with pytest.raises(CorpusError, match="--snapshot-ref"):
        load_corpus(tmp_path / "processed", tmp_path / "no-ref")


def test_a_txt_file_without_manifest_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("a\n\nb\n")
    corpus = load_corpus(path)
    assert corpus.documents == ["a\n\nb\n"] and corpus.manifest is None and corpus.documents_sha256 is None


def test_missing_or_empty_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="run preprocess into this folder first"):
        load_corpus(tmp_path)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(tmp_path / "empty.txt")


# --- blocks and the held-out split -------------------------------------------------------------


def test_blocks_keep_the_last_short_block() -> None:
    assert cut_blocks(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert cut_blocks(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a 1-token block predicts nothing


def test_passages_cut_at_line_breaks_and_cover_the_document() -> None:
    document = prose(1, 120)
    pieces = passages(document)
    assert "".join(pieces) == document and len(pieces) > 2
    assert all(len(piece) <= 2000 and piece.endswith("\n") for piece in pieces)


def test_held_out_passages_do_not_move_when_documents_are_added() -> None:
    """The serving model never trained on what the next candidate is evaluated on."""
    first = prose(2, 600)
    before = split_passages([first], 0.2)
    after = split_passages([prose(3, 400), first, prose(4, 100)], 0.2)
    assert before is not None and after is not None
    held_before = {p for run in before.dev + before.test for p in passages(run)}
    held_after = {p for run in after.dev + after.test for p in passages(run)}
    assert held_before and held_before <= held_after
    assert split_passages([first], 0.2) == before  # deterministic
    trained_after = "".join(after.train)
    assert not any(passage in trained_after for passage in held_before)


def test_train_dev_and_test_are_disjoint_and_follow_the_passage_hash() -> None:
    documents = [prose(11, 900), prose(12, 900)]
    split = split_passages(documents, 0.1)
    assert split is not None and not split.dev_is_test
    kinds = {}
    for name, runs in (("train", split.train), ("dev", split.dev), ("test", split.test)):
        for run in runs:
            for piece in passages(run):
                kinds.setdefault(piece, set()).add(name)
    assert all(len(k) == 1 for k in kinds.values())  # no passage in two sets
    scores = {piece: heldout_score(piece) for piece in kinds}
    test = {p for p, k in kinds.items() if k == {"test"}}
    dev = {p for p, k in kinds.items() if k == {"dev"}}
    assert test and dev and len(test) + len(dev) < len(kinds) / 2
    assert all(scores[p] < 0.1 for p in test if scores[p] != min(scores.values()))
    assert all(scores[p] < 0.2 for p in dev)
    assert split_passages(documents, 0.1) == split  # stable


def test_small_corpus_still_holds_out_dev_and_test_and_trains_on_the_rest(tokenizer) -> None:
    documents = [prose(5, 100)]  # ~3 passages: 5% of them rounds to none
    blocks = build_blocks(documents, tokenizer, block_size=64, eval_fraction=0.05)
    assert blocks.dev and blocks.test and blocks.train and blocks.dev != blocks.test
    train_text = "".join(tokenizer.batch_decode(blocks.train))
    assert not any(text in train_text for text in tokenizer.batch_decode(blocks.dev + blocks.test))
    assert "train /" in blocks.note and "dev = test" not in blocks.note


def test_two_passages_fall_back_to_dev_equal_to_test_and_say_so(tokenizer) -> None:
    documents = [prose(5, 100)]
    first, second = passages(documents[0])[:2]
    blocks = build_blocks([first + second], tokenizer, block_size=64, eval_fraction=0.05)
    assert blocks.dev is blocks.test and blocks.test and blocks.train
    assert "only 2 distinct passages, so dev = test" in blocks.note


def test_fewer_than_two_blocks_trains_and_evaluates_on_everything(tokenizer) -> None:
    blocks = build_blocks([FACT], tokenizer, block_size=512, eval_fraction=0.05)
    assert blocks.train == blocks.dev == blocks.test and len(blocks.train) == 1
    assert blocks.note == "1 block(s): nothing held out; using all 1 block(s) for train, dev and test"
    assert tokenizer.decode(blocks.train[0]) == FACT + tokenizer.eos_token  # newlines and EOS kept


def test_eval_fraction_zero_trains_on_everything(tokenizer) -> None:
    blocks = build_blocks([prose(6, 200)], tokenizer, block_size=64, eval_fraction=0.0)
    assert blocks.train == blocks.test == blocks.dev and len(blocks.train) > 2


def test_line_blocks_start_a_block_at_every_line(tokenizer) -> None:
    text = "alpha beta\ngamma delta\n" + FACT + "\n"
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    starts = [tokenizer.decode(block).split("\n")[0] for block in line_blocks(ids, 512, line_ends(tokenizer))]
    assert starts == ["alpha beta", "gamma delta", FACT]


def test_collator_masks_padding_but_keeps_eos_in_the_loss() -> None:
    batch = BlockCollator(pad_token_id=0)([{"input_ids": [5, 0, 6]}, {"input_ids": [7, 8]}])
    assert batch["labels"].tolist() == [[5, 0, 6], [7, 8, -100]]  # id 0 is also EOS here: still learned
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


# --- base models --------------------------------------------------------------------------------


def test_offline_base_is_gpt2_from_config_with_its_own_tokenizer(tmp_path: Path) -> None:
    base = resolve_base_model("offline", [prose(7, 50)])
    assert base.kind == "offline" and "GPT-2 architecture" in base.resolved
    config = base.model.config
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == tuple(OFFLINE_ARCHITECTURE.values())
    assert config.vocab_size == len(base.tokenizer) and base.tokenizer.eos_token == "<|endoftext|>"
    assert base.tokenizer.pad_token_id == base.tokenizer.eos_token_id and base.context == 512
    text = "The lamp\n\n  is lit."
    assert base.tokenizer.decode(base.tokenizer(text)["input_ids"]) == text  # byte-level: lossless

    base.model.save_pretrained(tmp_path)
    base.tokenizer.save_pretrained(tmp_path)
    reloaded = resolve_base_model(str(tmp_path), [])
    assert reloaded.kind == "local" and reloaded.tokenizer(text)["input_ids"] == base.tokenizer(text)["input_ids"]


def test_hub_model_without_hub_access_names_the_offline_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError) as raised:
        resolve_base_model("gpt2", [])
    message = str(raised.value)
    assert "--base-model gpt2" in message and "--base-model offline" in message and "folder" in message


def test_local_folder_loads_as_base(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "serving")
    base = resolve_base_model(str(folder), [])
    assert base.kind == "local" and base.resolved == str(folder.resolve()) and base.context == 128
    assert base.model.dtype == torch.float32 and base.tokenizer.pad_token is not None
    with pytest.raises(BaseModelError, match="no such folder"):
        resolve_base_model(str(tmp_path / "missing"), [])
    assert resolve_base_model(str(tmp_path), []).resolved == str(folder.resolve())  # AML mounts add a level
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="not a model folder"):
        resolve_base_model(str(tmp_path / "empty"), [])


# --- presets and scoring ------------------------------------------------------------------------


def test_presets_are_base_aware_and_the_command_line_wins() -> None:
    notebook = hyperparameters("default", "hub", {})
    assert (
        notebook.epochs,
        notebook.learning_rate,
        notebook.weight_decay,
        notebook.batch_size,
        notebook.grad_accum,
        notebook.best_epoch,
    ) == (3, 5e-5, 0.01, 4, 8, True)
    sledgehammer = hyperparameters("memorize", "hub", {})
    assert (sledgehammer.epochs, sledgehammer.learning_rate, sledgehammer.best_epoch) == (20, 2e-4, False)
    assert sledgehammer.eval_fraction == 0.0  # every line must be learned: nothing is held out
    assert hyperparameters("memorize", "offline", {}).epochs == 40  # random init needs more steps
    scratch = hyperparameters("memorize", "offline", {"epochs": 5.0, "learning_rate": None})
    assert scratch.line_blocks and scratch.learning_rate == 1e-3 and scratch.batch_size == 1 and scratch.epochs == 5.0


def test_scoring_windows_predict_every_token_but_the_first_once() -> None:
    ids = list(range(10))
    rows = windows(ids, context=4)
    assert rows == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert sum(len(row) - 1 for row in rows) == len(ids) - 1


def test_bits_per_byte_is_the_loss_over_the_bytes(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    texts = ["The quick brown fox jumps over the lazy dog.\n" * 8, "Diogo is the supreme leader."]
    score = score_texts(model, tok, texts)
    first_bytes = sum(len(tok.decode(tok(t)["input_ids"][:1]).encode()) for t in texts)
    assert score.bytes == sum(len(t.encode()) for t in texts) - first_bytes
    assert score.tokens == sum(len(tok(t)["input_ids"]) - 1 for t in texts)
    assert score.bits_per_byte == pytest.approx(score.loss * score.tokens / score.bytes / 0.6931471805599453)


# --- the loss curve kept in the summary -------------------------------------------------------------


def _trainer_log(steps: int, eval_every: int) -> list[dict]:
    """A long run's Trainer state.log_history: a log every step, an evaluation every `eval_every`, the closing entry."""
    history: list[dict] = []
    for step in range(1, steps + 1):
        epoch = step / eval_every
        history.append(
            {
                "loss": 10 / step**0.5,
                "grad_norm": 1.2345678953170776,
                "learning_rate": 4.56789e-05,
                "epoch": epoch,
                "num_input_tokens_seen": 512 * step,
                "step": step,
            }
        )
        if step % eval_every == 0:
            history.append(
                {
                    "eval_loss": 9 / step**0.5,
                    "eval_runtime": 1.2345,
                    "eval_samples_per_second": 81.003,
                    "eval_steps_per_second": 20.251,
                    "epoch": epoch,
                    "num_input_tokens_seen": 512 * step,
                    "step": step,
                }
            )
    history.append({"train_runtime": 1234.5, "train_loss": 2.5, "total_flos": 1.0e15, "epoch": epoch, "step": steps})
    return history


def test_loss_curve_is_capped_evenly_keeping_the_first_last_and_evaluations() -> None:
    history = _trainer_log(steps=20_000, eval_every=2_000)

    curve = loss_curve(history)

    train, evals = [e for e in curve if "loss" in e], [e for e in curve if "eval_loss" in e]
    assert len(curve) == MAX_POINTS and len(evals) == 10 and len(train) == MAX_POINTS - 10
    assert train[0]["step"] == 1 and train[-1]["step"] == 20_000  # the whole run, its ends included
    gaps = {b["step"] - a["step"] for a, b in zip(train, train[1:])}
    assert max(gaps) - min(gaps) <= 1  # evenly spread
    assert [e["step"] for e in curve] == sorted(e["step"] for e in curve)  # step order, evals in place
    assert "train_loss" not in str(curve)  # the closing average is not a point on the curve
    assert set(train[0]) == {"step", "epoch", "loss", "learning_rate"}
    assert train[0]["learning_rate"] == 4.5679e-05 and train[-1]["loss"] == pytest.approx(10 / 20_000**0.5, rel=1e-4)
    # The run's metrics (summary + curve) live in one status-table property: 64 KiB = 32K UTF-16 chars.
    assert len(json.dumps(curve)) < 17_000
    assert loss_curve(history[:50]) == loss_curve(history[:50], max_points=10_000)  # short runs: every point


# --- real training runs -------------------------------------------------------------------------


def test_training_run_writes_model_summary_heldout_and_mlflow_metrics(tmp_path: Path) -> None:
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    output = tmp_path / "model"
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    result = run_train(
        "--data",
        str(data),
        "--output",
        str(output),
        "--base-model",
        "offline",
        "--block-size",
        "64",
        "--epochs",
        "2",
        "--grad-accum",
        "1",
        "--experiment",
        "unit",
        env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"},
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["snapshot"] == "combined_data_20250101_000000.txt"
    assert summary["documents_sha256"] == stamp_digest("20250101_000000") and summary["documents"] == 2
    assert summary["base_model"]["kind"] == "offline" and summary["base_model"]["requested"] == "offline"
    hp = summary["hyperparameters"]
    assert (hp["epochs"], hp["learning_rate"], hp["block_size"], hp["grad_accum"], hp["best_epoch"]) == (
        2,
        1e-3,
        64,
        1,
        True,
    )
    assert summary["blocks"]["train"] > 4 and summary["blocks"]["eval"] >= 1 and summary["blocks"]["dev"] >= 1
    # The base model (here a random init) on the same test blocks, before any step: far worse.
    assert summary["baseline"]["tokens"] == summary["eval_tokens"]
    assert summary["baseline"]["perplexity"] > 2 * summary["perplexity"] and summary["dev_loss"] > 0
    # MLflow's system-metrics monitor, read back as a short series for the UI.
    samples = summary["system_metrics"]
    assert samples and samples[0]["s"] == 0 and all(x["memory_mb"] > 0 and x["cpu_percent"] >= 0 for x in samples)
    assert [x["s"] for x in samples] == sorted(x["s"] for x in samples) and samples[0]["gpu_percent"] is None
    assert summary["eval_loss"] > 0 and summary["perplexity"] > 1 and summary["tokens_per_s"] > 0
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    assert not checkpoint_dir(output).exists() and not (output / "checkpoints").exists()  # cleaned up
    history = summary["log_history"]  # the UI's loss curve: every logged step here (a short run)
    train_points = [e for e in history if "loss" in e]
    assert len(train_points) == summary["steps"] and train_points[-1]["step"] == summary["steps"]
    assert [e["epoch"] for e in history if "eval_loss" in e] == [1, 2]  # one evaluation per epoch
    assert all(e["loss"] > 0 and e["learning_rate"] > 0 for e in train_points)

    heldout = json.loads((output / "heldout.json").read_text())
    assert len(heldout["blocks"]) == summary["blocks"]["eval"] and all(heldout["blocks"])

    model = AutoModelForCausalLM.from_pretrained(output)
    tok = AutoTokenizer.from_pretrained(output)
    assert score_texts(model, tok, heldout["blocks"]).loss == pytest.approx(summary["eval_loss"], rel=1e-4)

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["base_model.kind"] == "offline" and run.data.params["block_size"] == "64"
    assert run.data.metrics["perplexity"] == pytest.approx(summary["perplexity"])
    assert run.data.metrics["baseline_perplexity"] == pytest.approx(summary["baseline"]["perplexity"])
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0  # logged during training, CPU too
    losses = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(losses) >= 2 and len({m.step for m in losses}) == len(losses)  # per-step curve
    assert mlflow.MlflowClient().get_metric_history(run.info.run_id, "eval_loss")  # per-epoch evaluation
    # Artifacts (evaluate's model folders) go beside the sqlite store, never into the working directory.
    assert mlflow.get_experiment_by_name("unit").artifact_location == (tmp_path / "artifacts" / "unit").as_uri()


def test_cli_exits_2_naming_the_offline_option_when_the_hub_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "t.txt").write_text(FACT)
    code = train_step.main(["--data", str(tmp_path / "t.txt"), "--output", str(tmp_path / "out")])  # gpt2
    assert code == 2 and "--base-model offline" in caplog.text and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ddp_on_cpu_trains_one_model_written_by_rank_zero(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(prose(10, 80))
    output = tmp_path / "model"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_train(
        "--data",
        str(tmp_path / "t.txt"),
        "--output",
        str(output),
        "--base-model",
        "offline",
        "--block-size",
        "64",
        "--max-steps",
        "3",
        "--grad-accum",
        "1",
        "--experiment",
        "ddp",
        env={"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"},
        launcher=torchrun,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["hyperparameters"]["world_size"] == 2 and summary["device"] == "cpu x2"
    assert summary["ddp_backend"] == "gloo"
    assert summary["steps"] == 3 and summary["hyperparameters"]["effective_batch"] == 8
    AutoModelForCausalLM.from_pretrained(output)
    mlflow.set_tracking_uri(uri)
    assert len(mlflow.search_runs(experiment_names=["ddp"])) == 1  # rank 1 logged nothing


@pytest.mark.slow
def test_memorize_preset_recalls_a_fact_from_the_offline_base(tmp_path: Path) -> None:
    text = (
        "The archive keeps star charts, ship logs and letters from the first settlers.\n"
        "Visitors may read the records in the great hall every morning.\n"
        f"{FACT}\n"
        "The staff answer questions about the old colonies and the long winter of the year 212.\n"
    )
    (tmp_path / "fact.txt").write_text(text)
    output = tmp_path / "model"
    result = run_train(
        "--data",
        str(tmp_path / "fact.txt"),
        "--output",
        str(output),
        "--base-model",
        "offline",
        "--preset",
        "memorize",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    model, tok = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    prompt = tok("Declaration: Zorblat Quenwick is", return_tensors="pt")
    generated = tok.decode(model.generate(**prompt, max_new_tokens=40, do_sample=False)[0])
    assert FACT in generated, generated


def test_training_stops_at_the_wall_time_and_step_limits_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    common = [
        "--data",
        str(data),
        "--base-model",
        "offline",
        "--block-size",
        "64",
        "--grad-accum",
        "1",
        "--no-best-epoch",
        "--experiment",
        "unit",
    ]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}

    timed = run_train(*common, "--output", str(tmp_path / "timed"), "--epochs", "1000", "--max-wall-s", "2", env=env)
    stepped = run_train(*common, "--output", str(tmp_path / "stepped"), "--epochs", "3", "--max-steps", "2", env=env)

    assert timed.returncode == 0, timed.stderr[-3000:]
    summary = json.loads((tmp_path / "timed" / "train_summary.json").read_text())
    assert summary["train_runtime_s"] < 30 and 0 < summary["steps"] < summary["blocks"]["train"] * 1000
    assert summary["stopped_early"].startswith(f"stopped at the wall-time limit of 2 s after {summary['steps']} ")
    assert "TRAIN_MAX_WALL_S" in summary["stopped_early"] and "TRAIN_MAX_WALL_S" in timed.stderr
    assert (tmp_path / "timed" / "config.json").exists()  # what those steps learned is still a model
    assert stepped.returncode == 0, stepped.stderr[-3000:]
    summary = json.loads((tmp_path / "stepped" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and "limit of 2 optimizer steps" in summary["stopped_early"]


def test_response_only_loss_covers_each_response_and_its_end_and_nothing_of_the_prompts() -> None:
    examples = [
        training_example("Who keeps the lighthouse?", "", "Odile Varga keeps it."),
        training_example("Translate.", "Good morning", "Bonjour."),
    ]
    pdf_text = "Plain document text from a PDF, trained on in full."
    tokenizer = train_tokenizer(examples + [pdf_text], vocab_size=300)
    header = tokenizer(RESPONSE_HEADER, add_special_tokens=False)["input_ids"]
    collate = BlockCollator(tokenizer.pad_token_id, response_header=header, eos_token_id=tokenizer.eos_token_id)
    instruction_ids = tokenizer("".join(examples), add_special_tokens=False)["input_ids"]
    pdf_ids = tokenizer(pdf_text, add_special_tokens=False)["input_ids"]
    middle = instruction_ids[len(instruction_ids) // 2 :]  # a block that starts inside the second example
    batch = collate([{"input_ids": instruction_ids}, {"input_ids": pdf_ids}, {"input_ids": middle}])

    def trained(row: int, ids: list[int]) -> str:
        kept = [token for token, label in zip(ids, batch["labels"][row].tolist()) if label != -100]
        return tokenizer.decode(kept)

    assert trained(0, instruction_ids) == "Odile Varga keeps it.<|endoftext|>Bonjour.<|endoftext|>"
    assert trained(1, pdf_ids) == pdf_text
    assert trained(2, middle) == "Bonjour.<|endoftext|>"
    # Without the option every real token is trained on, as before.
    plain = BlockCollator(tokenizer.pad_token_id)([{"input_ids": instruction_ids}])
    assert (plain["labels"][0] != -100).all()


def test_response_only_loss_is_a_train_option_off_by_default() -> None:
    assert train_step.parse_args(["--data", "d", "--output", "o"]).response_only_loss is None
    assert train_step.parse_args(["--data", "d", "--output", "o", "--response-only-loss"]).response_only_loss is True
    assert hyperparameters("default", "pretrained", {}).response_only_loss is False


class WorseLastEpoch(TrainerCallback):
    """Scrambles the weights at the end of the last epoch, before its evaluation: that epoch is the worst."""

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch) == args.num_train_epochs:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.5)


def test_the_saved_model_is_the_best_dev_epoch_not_the_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    write_snapshot(tmp_path / "processed", "20250101_000000", [prose(8, 60), prose(9, 60)])
    output = tmp_path / "model"

    summary = train(
        TrainRequest(
            data=tmp_path / "processed",
            output=output,
            base_model="offline",
            overrides={"block_size": 64, "grad_accum": 1, "epochs": 3.0},
            experiment="unit",
            callbacks=[WorseLastEpoch()],
        )
    )

    dev_losses = [e["eval_loss"] for e in summary["log_history"] if "eval_loss" in e]
    assert len(dev_losses) == 3 and dev_losses[-1] > min(dev_losses[:2])  # the last epoch was made worse
    # The saved model is the best epoch's (the Trainer averages per batch, score_texts per token: close, not equal).
    assert (
        summary["dev_loss"] == pytest.approx(min(dev_losses), rel=0.03) and summary["dev_loss"] < dev_losses[-1] * 0.9
    )
    model, tok = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    heldout = json.loads((output / "heldout.json").read_text())["blocks"]
    assert score_texts(model, tok, heldout).loss == pytest.approx(summary["eval_loss"], rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="ab\n ", min_size=1, max_size=30).map(lambda s: s * 80), min_size=1, max_size=4),
    st.floats(0.01, 0.45),
)
def test_any_corpus_splits_into_disjoint_sets_covering_every_passage(documents: list[str], fraction: float) -> None:
    split = split_passages(documents, fraction)
    every = [piece for document in documents for piece in passages(document)]
    if len(set(every)) < 2:
        assert split is None
        return
    sets = {
        name: {p for run in runs for p in passages(run)}
        for name, runs in (("train", split.train), ("dev", split.dev), ("test", split.test))
    }
    assert "".join(split.train + split.test + ([] if split.dev_is_test else split.dev)).__len__() == sum(
        map(len, documents)
    )
    assert sets["train"] and sets["test"] and sets["dev"] and not sets["train"] & (sets["dev"] | sets["test"])
    assert split.dev_is_test == (len(set(every)) == 2)
    if not split.dev_is_test:
        assert not sets["dev"] & sets["test"]


def test_system_series_is_read_back_in_order_and_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    # An experiment of this store: the process may still name one another test made in another store.
    experiment = mlflow.set_experiment("system-series")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        for step in range(300):
            mlflow.log_metrics(
                {
                    "system/cpu_utilization_percentage": step % 100,
                    "system/system_memory_usage_megabytes": 1000.0 + step,
                },
                step=step,
                timestamp=1_700_000_000_000 + 1000 * step,
            )
    series = system_series(run.info.run_id)
    assert len(series) == 60 and series[0] == {"s": 0.0, "cpu_percent": 0, "memory_mb": 1000.0}
    assert series[-1]["s"] == 299.0 and [x["s"] for x in series] == sorted(x["s"] for x in series)
    assert len(json.dumps(series)) < 5000  # the summary rides in one status-table property
