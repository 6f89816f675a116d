"""Train step: fine-tune a causal LM (GPT-2 by default) on the newest text snapshot.

    python aks_jobs/train.py --data PROCESSED_OR_TXT --output DIR [--base-model gpt2|FOLDER|offline]
                             [--preset default|memorize] [--epochs N] [--learning-rate F] ...
    torchrun --nproc_per_node N aks_jobs/train.py ...     (DDP; only rank 0 writes)

Writes DIR/ = save_pretrained model + tokenizer, DIR/train_summary.json and DIR/heldout.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from aks_jobs.cli_args import bounded, json_model
from aks_jobs.lm.base_model import BaseModelError
from aks_jobs.lm.corpus import CorpusError
from aks_jobs.lm.execution_plan import COMPILE_MODES
from aks_jobs.lm.presets import OFFLINE_KIND
from aks_jobs.lm.recipe import PRESETS, preset_help
from aks_jobs.lm.sweep import BanditRule, SearchSpace
from aks_jobs.lm.sweep_trials import run_sweep
from aks_jobs.lm.training import TrainRequest, train
from aks_jobs.lm.trial_record import record_trial


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fine-tune a causal LM on the newest combined_data_*.txt snapshot with the HF Trainer "
        "(the design notebook's recipe). Hyperparameters left out take the preset's values, "
        "which differ for the offline base (trained from scratch).",
        epilog="Writes OUTPUT/ (model + tokenizer), OUTPUT/train_summary.json and OUTPUT/heldout.json; "
        "logs params and per-step metrics to MLflow (MLFLOW_TRACKING_URI, else .local/mlflow).",
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="processed folder (its newest complete snapshot is used) or a .txt file",
    )
    parser.add_argument(
        "--snapshot-ref",
        type=Path,
        metavar="DIR",
        help="preprocess's --snapshot-ref folder: train on the snapshot its snapshot.json names "
        "(default: the newest complete snapshot in --data)",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for the model and summaries")
    parser.add_argument(
        "--base-model",
        default="gpt2",
        help=f"Hugging Face id (default gpt2), a save_pretrained() folder to continue from, or "
        f"'{OFFLINE_KIND}': GPT-2 architecture from a small config with a tokenizer trained on "
        f"the snapshot, for machines without hub access",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="default: notebook recipe; memorize: the notebook's sledgehammer for tiny corpora",
    )
    parser.add_argument("--epochs", type=bounded(float, above=0), help=preset_help("epochs"))
    parser.add_argument("--learning-rate", type=bounded(float, above=0), help=preset_help("learning_rate"))
    parser.add_argument("--weight-decay", type=bounded(float, at_least=0), help=preset_help("weight_decay"))
    parser.add_argument(
        "--warmup-ratio",
        type=bounded(float, at_least=0, below=1),
        help=f"share of the optimizer steps warming the learning rate up; {preset_help('warmup_ratio')}",
    )
    parser.add_argument("--batch-size", type=bounded(int, above=0), help=f"per device; {preset_help('batch_size')}")
    parser.add_argument("--grad-accum", type=bounded(int, above=0), help=preset_help("grad_accum"))
    parser.add_argument(
        "--micro-batch",
        type=bounded(int, above=0),
        help="blocks per forward pass; must divide batch-size x grad-accum, the rest is accumulated "
        "(default: the largest that fits the device's memory)",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="torch.compile the model; auto: on GPU when the run is long enough to repay compiling (default: auto)",
    )
    parser.add_argument("--block-size", type=bounded(int, above=0), help="default: min(1024, model context)")
    parser.add_argument(
        "--eval-fraction",
        type=bounded(float, at_least=0, below=1),
        help="share of passages held out (default 0.05); 0 trains and evaluates on everything",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=bounded(int, above=0), help="stop after this many optimizer steps")
    parser.add_argument(
        "--max-wall-s",
        type=bounded(float, above=0),
        metavar="SECONDS",
        help="stop training after this many seconds of it; the summary says where it stopped",
    )
    parser.add_argument(
        "--best-epoch",
        action=argparse.BooleanOptionalAction,
        help=f"evaluate and checkpoint every epoch, end with the best; {preset_help('best_epoch')}",
    )
    parser.add_argument(
        "--line-blocks",
        action=argparse.BooleanOptionalAction,
        help=f"overlapping training blocks, one starting at every line; {preset_help('line_blocks')}",
    )
    parser.add_argument(
        "--response-only-loss",
        action=argparse.BooleanOptionalAction,
        help="instruction data (.jsonl/.json uploads): the loss covers the response tokens only, not "
        "the instruction and input (default: off, every token)",
    )
    parser.add_argument("--experiment", default="gpt2-pdf", help="MLflow experiment name")
    sweep = parser.add_argument_group(
        "sweep",
        "run trials of the search space one after another (in Azure ML the "
        "pipeline's sweep node runs the trials instead)",
    )
    sweep.add_argument(
        "--sweep-trials",
        type=bounded(int, at_least=0),
        default=0,
        help="number of trials (default 0: no sweep, one training run)",
    )
    sweep.add_argument(
        "--sweep-space",
        type=json_model(SearchSpace),
        default=SearchSpace(),
        metavar="JSON",
        help=f"bounds of the swept settings, e.g. '{{\"learning_rate_max\": 1e-3}}'; "
        f"defaults {SearchSpace().model_dump_json()}",
    )
    sweep.add_argument(
        "--sweep-rule",
        type=json_model(BanditRule),
        default=BanditRule(),
        metavar="JSON",
        help=f"the Bandit early-termination rule; defaults {BanditRule().model_dump_json()}",
    )
    sweep.add_argument(
        "--sweep-timeout-s",
        type=bounded(int, at_least=0),
        default=0,
        metavar="SECONDS",
        help="time limit of the whole sweep: no trial starts after it and a running one is stopped; the best "
        "trial that finished before it goes on (default 0: none)",
    )
    sweep.add_argument(
        "--trial-record",
        choices=("on", "off"),
        default="off",
        help="on for an Azure ML sweep trial: keep OUTPUT/trial.json (settings, dev losses, end) as the trial "
        "goes, for evaluate --trials (default off)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    overrides = {
        key: getattr(args, key)
        for key in (
            "epochs",
            "learning_rate",
            "weight_decay",
            "warmup_ratio",
            "batch_size",
            "grad_accum",
            "micro_batch",
            "compile",
            "block_size",
            "eval_fraction",
            "seed",
            "max_steps",
            "max_wall_s",
            "best_epoch",
            "line_blocks",
            "response_only_loss",
        )
    }
    request = TrainRequest(
        data=args.data,
        output=args.output,
        snapshot_ref=args.snapshot_ref,
        base_model=args.base_model,
        preset=args.preset,
        overrides=overrides,
        experiment=args.experiment,
    )
    try:
        if args.sweep_trials:
            run_sweep(request, args.sweep_trials, args.sweep_space, args.sweep_rule, timeout_s=args.sweep_timeout_s)
        elif args.trial_record == "on":
            record_trial(train, request, main=rank == 0)
        else:
            train(request)
    except (CorpusError, BaseModelError, ValueError) as error:
        logging.getLogger("train").error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
