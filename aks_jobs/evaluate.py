"""Evaluate step: held-out perplexity of the candidate against the serving model; decide; register.

    python aks_jobs/evaluate.py --model TRAIN_OUTPUT --output DIR [--serving-model DIR]
                                [--max-perplexity F] [--min-improvement 0.0] [--model-name gpt2-pdf]
                                [--no-register]

Writes DIR/evaluation.json (pipeline_contracts.evaluation): decision promote|reject, reason, the scores,
snapshot, registered {name, version}|null and the train summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aks_jobs.cli_args import bounded
from aks_jobs.lm.base_model import BaseModelError
from aks_jobs.lm.evaluation import EvaluateRequest, evaluate
from aks_jobs.lm.gate import Rules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score a train.py output on its held-out text (and the model now serving on the same "
        "text), decide promote or reject, and register the candidate in the MLflow registry.",
        epilog="The decision compares bits per UTF-8 byte, which holds across tokenizers; token perplexity "
        "is reported too and is what --max-perplexity caps.",
    )
    parser.add_argument("--model", type=Path, required=True, help="train.py output folder (the candidate)")
    parser.add_argument("--output", type=Path, required=True, help="folder for evaluation.json")
    parser.add_argument("--serving-model", type=Path, help="save_pretrained() folder of the model now serving")
    parser.add_argument(
        "--trials",
        type=Path,
        help="an Azure ML sweep's trials folder (train.py --trial-record outputs): report them as the sweep",
    )
    parser.add_argument(
        "--sweep-trials", type=bounded(int, above=0), help="with --trials: how many trials the sweep was asked for"
    )
    parser.add_argument(
        "--sweep-timeout-s", type=bounded(int, at_least=0), help="with --trials: the sweep's time limit (0 none)"
    )
    parser.add_argument(
        "--max-perplexity",
        type=bounded(float, at_least=0),
        help="reject a candidate whose held-out token perplexity is above this",
    )
    parser.add_argument(
        "--min-improvement",
        type=bounded(float, at_least=0),
        default=0.0,
        help="relative drop in bits per byte needed to replace the serving model (default 0: any improvement)",
    )
    parser.add_argument("--model-name", default="gpt2-pdf", help="registered model name")
    parser.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="decide only; do not log or register anything in MLflow",
    )
    parser.add_argument("--experiment", default="gpt2-pdf", help="MLflow experiment name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = EvaluateRequest(
        model=args.model,
        output=args.output,
        serving_model=args.serving_model,
        trials=args.trials,
        sweep_limits=(args.sweep_trials, args.sweep_timeout_s),
        rules=Rules(args.min_improvement, args.max_perplexity),
        model_name=args.model_name,
        register=args.register,
        experiment=args.experiment,
    )
    try:
        evaluation = evaluate(request)
    except BaseModelError as error:
        logging.getLogger("evaluate").error("%s", error)
        return 2
    print(f"{evaluation.decision}: {evaluation.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
