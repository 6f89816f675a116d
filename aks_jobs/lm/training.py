"""The train step: snapshot -> blocks -> HF Trainer -> model folder, train_summary.json, heldout.json (test text).

Runs alone or under torchrun (DDP: NCCL on GPU, gloo on CPU). Every rank builds the same blocks from
the same snapshot; only rank 0 talks to MLflow and writes the outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, set_seed

from aks_jobs.lm.base_model import BaseModel, resolve_base_model
from aks_jobs.lm.blocks import BlockCollator, BlockDataset, Blocks, build_blocks
from aks_jobs.lm.corpus import Corpus, load_corpus
from aks_jobs.lm.execution_plan import ExecutionPlan, pad_vocabulary, plan_execution, trim_vocabulary
from aks_jobs.lm.fused_loss import fused_loss
from aks_jobs.lm.kind_tokens import add_kind_tokens
from aks_jobs.lm.limits import WallClockLimit, stop_reason
from aks_jobs.lm.loss_curve import loss_curve
from aks_jobs.lm.perplexity import TextScore, score_texts
from aks_jobs.lm.prompt_format import RESPONSE_HEADER
from aks_jobs.lm.recipe import (
    COMMON,
    Hyperparameters,
    choose_block_size,
    effective_batch,
    hyperparameters,
    optimizer_steps,
    precision,
    training_arguments,
)
from aks_jobs.lm.system_metrics import system_series
from aks_jobs.lm.tracking import DevLoss, StepMetrics, flat_params, use_experiment
from pipeline_contracts import train_summary
from pipeline_contracts.train_summary import TrainSummary

log = logging.getLogger(__name__)

SUMMARY = train_summary.FILE_NAME
HELDOUT = "heldout.json"
ATTENTION = "sdpa"  # fused attention kernels on GPU; also the fastest path on CPU
# Not dev_loss: that name is the sweep's primary metric, one value per evaluation (tracking.DevLoss).
FINAL_METRICS = ("train_loss", "eval_loss", "perplexity", "eval_bits_per_byte", "tokens_per_s", "wall_s")


@dataclass
class TrainRequest:
    data: Path
    output: Path
    snapshot_ref: Path | None = None  # preprocess's snapshot.json folder: train on that snapshot, not the newest
    base_model: str = "gpt2"
    preset: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)  # Hyperparameters fields; None = preset's value
    experiment: str = "gpt2-pdf"
    run_name: str | None = None  # MLflow run name; default train-<snapshot>
    callbacks: list[TrainerCallback] = field(default_factory=list)  # e.g. a sweep's early-termination rule


def device_description(world_size: int) -> str:
    name = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    return f"{name} x{world_size}" if world_size > 1 else name


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode("utf-8")).hexdigest()


def check_ranks_agree(value: str, what: str) -> None:
    """Under DDP every rank must see identical data; stop loudly if one does not."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    values: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"DDP ranks disagree on the {what}: {values}")


def checkpoint_dir(output: Path) -> Path:
    """Per-epoch checkpoints (default preset) go to local scratch, not the output folder, which in AML is
    mounted blob storage; every rank derives the same path, as the best one is loaded from it on each."""
    digest = hashlib.sha256(str(output.resolve()).encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"train-checkpoints-{digest}"


def start_tracking(
    request: TrainRequest,
    corpus: Corpus,
    base: BaseModel,
    hp: Hyperparameters,
    plan: ExecutionPlan,
    block_size: int,
    world_size: int,
) -> None:
    """Open the MLflow run (rank 0 only) with every setting as a param, logging system metrics (CPU and
    memory; GPU where there is one). Inside an open run (a sweep's) it is a child run."""
    nested = mlflow.active_run() is not None
    if not nested:
        use_experiment(request.experiment)
    mlflow.start_run(
        run_name=request.run_name or f"train-{corpus.snapshot}",
        nested=nested,
        log_system_metrics=True,
    )
    mlflow.log_params(
        flat_params(
            {
                "snapshot": corpus.snapshot,
                "documents_sha256": corpus.documents_sha256,
                "base_model": base.describe(),
                "preset": request.preset,
                "block_size": block_size,
                "world_size": world_size,
                **hp.to_dict(),
                "execution": plan.to_dict(),
            }
        )
    )


def summarize(
    request: TrainRequest,
    corpus: Corpus,
    base: BaseModel,
    hp: Hyperparameters,
    plan: ExecutionPlan,
    block_size: int,
    blocks: Blocks,
    trainer: Trainer,
    train_metrics: dict[str, float],
    texts: dict[str, list[str]],
    baseline: TextScore,
    started: float,
) -> dict[str, Any]:
    world_size = trainer.args.world_size
    score = score_texts(trainer.model, base.tokenizer, texts["test"])
    dev = score if texts["dev"] is texts["test"] else score_texts(trainer.model, base.tokenizer, texts["dev"])
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    runtime = train_metrics["train_runtime"]
    return {
        "snapshot": corpus.snapshot,
        "snapshot_path": str(corpus.path),
        "documents_sha256": corpus.documents_sha256,
        "documents": len(corpus.documents),
        "base_model": base.describe(),
        "preset": request.preset,
        "hyperparameters": {
            **hp.to_dict(),
            "block_size": block_size,
            "world_size": world_size,
            "effective_batch": effective_batch(hp, world_size),
        },
        "train_loss": train_metrics["train_loss"],
        "final_loss": losses[-1] if losses else None,
        "eval_loss": score.loss,
        "perplexity": score.perplexity,
        "eval_bits_per_byte": score.bits_per_byte,
        "eval_tokens": score.tokens,
        "dev_loss": dev.loss,
        "baseline": baseline.to_dict(),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_tokens": trainer.state.num_input_tokens_seen,
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime if runtime else None,
        "train_runtime_s": runtime,
        "wall_s": time.perf_counter() - started,
        "device": device_description(world_size),
        "ddp_backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "precision": precision(),
        "attention": ATTENTION,
        "execution": plan.to_dict(),
        "blocks": {"train": len(blocks.train), "dev": len(blocks.dev), "eval": len(blocks.test), "split": blocks.note},
        "mlflow_run_id": mlflow.active_run().info.run_id if mlflow.active_run() else None,
        "log_history": loss_curve(trainer.state.log_history),  # the UI's loss curve, capped
    }


def write_outputs(
    output: Path,
    base: BaseModel,
    trainer: Trainer,
    summary: dict[str, Any],
    heldout: list[str],
    block_size: int,
    corpus: Corpus,
) -> None:
    output.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output)
    base.tokenizer.save_pretrained(output)
    (output / SUMMARY).write_text(
        TrainSummary.model_validate(summary).model_dump_json(indent=2) + "\n", encoding="utf-8"
    )
    heldout_doc = {
        "snapshot": summary["snapshot"],
        "documents_sha256": summary["documents_sha256"],
        "block_size": block_size,
        "split": summary["blocks"]["split"],
        # What the model card lists: the documents whose text the snapshot holds.
        "documents": [
            {"name": d.name, "sha256": d.sha256}
            for d in (corpus.manifest.documents if corpus.manifest else [])
            if d.chars
        ],
        "blocks": heldout,
    }
    (output / HELDOUT).write_text(json.dumps(heldout_doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _response_only(tokenizer: PreTrainedTokenizerBase, hp: Hyperparameters) -> dict[str, Any]:
    """BlockCollator settings that restrict the loss to instruction responses, when asked for."""
    if not hp.response_only_loss:
        return {}
    header = tokenizer(RESPONSE_HEADER, add_special_tokens=False)["input_ids"]
    return {"response_header": header, "eos_token_id": tokenizer.eos_token_id}


def train(request: TrainRequest) -> dict[str, Any] | None:
    """Train and write the outputs; return the summary on rank 0 (None on the other ranks)."""
    started = time.perf_counter()
    corpus = load_corpus(request.data, request.snapshot_ref)
    seed = request.overrides.get("seed")
    seed = COMMON["seed"] if seed is None else seed
    set_seed(seed)  # before the offline model's random init, so every rank starts identical
    base = resolve_base_model(request.base_model, corpus.documents, ATTENTION)
    kinds = add_kind_tokens(base.tokenizer, base.model, corpus.kinds)  # before any text is tokenized
    hp = hyperparameters(request.preset, base.kind, {**request.overrides, "seed": seed})
    block_size = choose_block_size(hp, base.context)
    blocks = build_blocks(corpus.documents, base.tokenizer, block_size, hp.eval_fraction, hp.line_blocks)
    heldout = base.tokenizer.batch_decode(blocks.test)
    texts = {"test": heldout, "dev": heldout if blocks.dev is blocks.test else base.tokenizer.batch_decode(blocks.dev)}
    if torch.cuda.is_available():
        base.model.to("cuda")
    # Before any step and before the vocabulary is padded: what the base model alone scores on the test text.
    baseline = score_texts(base.model, base.tokenizer, heldout) if int(os.environ.get("RANK", "0")) == 0 else None

    checkpoints = checkpoint_dir(request.output)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    vocabulary = pad_vocabulary(base.model)
    plan = plan_execution(
        base.model,
        block_size,
        hp.batch_size,
        hp.grad_accum,
        hp.micro_batch,
        hp.compile,
        train_tokens=sum(map(len, blocks.train)) * hp.epochs / world_size,
    )
    args = training_arguments(hp, plan, checkpoints, len(blocks.train), world_size)
    args.device  # noqa: B018 - initialises the process group under torchrun before the check below
    check_ranks_agree(
        f"{tokenizer_fingerprint(base.tokenizer)}:{len(blocks.train)}:{len(blocks.dev)}:{len(blocks.test)}",
        "tokenizer and blocks",
    )
    wall = WallClockLimit(hp.max_wall_s) if hp.max_wall_s else None
    trainer = Trainer(
        model=base.model,
        args=args,
        train_dataset=BlockDataset(blocks.train),
        eval_dataset=BlockDataset(blocks.dev),  # picks the best epoch; test stays unseen
        processing_class=base.tokenizer,
        data_collator=BlockCollator(base.tokenizer.pad_token_id, **_response_only(base.tokenizer, hp)),
        callbacks=[StepMetrics(), DevLoss(), *request.callbacks, *([wall] if wall else [])],
    )
    main = trainer.is_world_process_zero()
    try:
        if main:
            log.info(
                "base model %s (%s) on %s, %s; %d train / %d dev / %d test blocks of <= %d tokens; %s; %s",
                base.resolved,
                base.kind,
                device_description(args.world_size),
                precision(),
                len(blocks.train),
                len(blocks.dev),
                len(blocks.test),
                block_size,
                hp.to_dict(),
                plan.to_dict(),
            )
            shutil.rmtree(checkpoints, ignore_errors=True)  # a failed earlier run's, never resumed
            start_tracking(request, corpus, base, hp, plan, block_size, args.world_size)
        with fused_loss(base.model):
            train_metrics = trainer.train().metrics
        summary = None
        if main:
            trim_vocabulary(trainer.model, vocabulary)
            summary = summarize(
                request, corpus, base, hp, plan, block_size, blocks, trainer, train_metrics, texts, baseline, started
            )
            summary["kinds"] = kinds
            planned = optimizer_steps(replace(hp, max_steps=None), len(blocks.train), args.world_size)
            summary["stopped_early"] = stop_reason(hp.max_steps, planned, trainer.state.global_step, wall)
            if summary["stopped_early"]:
                log.warning("%s", summary["stopped_early"])
            mlflow.log_metrics({key: float(summary[key]) for key in FINAL_METRICS if summary[key] is not None})
            mlflow.log_metrics({f"baseline_{key}": float(value) for key, value in baseline.to_dict().items()})
            mlflow.end_run()  # stops MLflow's system-metrics monitor, which flushes its last samples
            summary["system_metrics"] = system_series(summary["mlflow_run_id"])
            write_outputs(request.output, base, trainer, summary, heldout, block_size, corpus)
            log.info(
                "wrote %s: eval loss %.4f, perplexity %.2f, %.0f tokens/s, %.1f s",
                request.output,
                summary["eval_loss"],
                summary["perplexity"],
                summary["tokens_per_s"] or 0,
                summary["wall_s"],
            )
        trainer.accelerator.wait_for_everyone()  # rank 0 may still be writing; then drop the checkpoints
        if main:
            shutil.rmtree(checkpoints, ignore_errors=True)
        return summary
    except BaseException:
        if main and mlflow.active_run():
            mlflow.end_run(status="FAILED")
        raise
