"""The train step as an Azure ML sweep node, built from the one sweep definition (aks_jobs/lm/sweep.py).

Each trial is the train component with sampled learning_rate / epochs / warmup_ratio / weight_decay inputs;
AML applies the Bandit policy to the dev_loss each trial logs per epoch and ranks trials by it. The
node's `model` output is the best trial's, which evaluate reads as before.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aks_jobs.lm.sweep import GOAL, PRIMARY_METRIC, BanditRule, SearchSpace, Sweep

if TYPE_CHECKING:
    from azure.ai.ml.entities import Command
    from azure.ai.ml.entities import Sweep as SweepNode
    from azure.ai.ml.sweep import BanditPolicy, Choice, LogUniform, Uniform

SAMPLING = "random"
# Each trial writes its model (and its trial.json record) to its own folder under the run's TRIALS folder
# (${{name}}: the trial job's name); the sweep node's output is the chosen trial's. A fixed folder would
# have concurrent trials overwrite each other. evaluate reads every trial's record from TRIALS.
TRIALS = "trials"
TRIAL_FOLDER = f"{TRIALS}/${{{{name}}}}/model/"
# The train input that has each trial keep its record (aks_jobs/lm/trial_record.py).
TRIAL_RECORD = {"trial_record": "on"}


def search_space(space: SearchSpace) -> dict[str, Choice | LogUniform | Uniform]:
    from azure.ai.ml.sweep import Choice, LogUniform, Uniform

    return {
        # LogUniform's bounds are the exponents: exp(uniform(min, max)) (azure-ai-ml sweep/search_space.py).
        "learning_rate": LogUniform(
            min_value=math.log(space.learning_rate_min), max_value=math.log(space.learning_rate_max)
        ),
        "epochs": Choice(values=space.epoch_choices()),
        "warmup_ratio": Uniform(min_value=space.warmup_ratio_min, max_value=space.warmup_ratio_max),
        "weight_decay": Uniform(min_value=space.weight_decay_min, max_value=space.weight_decay_max),
    }


def bandit_policy(rule: BanditRule) -> BanditPolicy:
    from azure.ai.ml.sweep import BanditPolicy

    return BanditPolicy(
        slack_factor=rule.slack_factor,
        slack_amount=rule.slack_amount,
        evaluation_interval=rule.evaluation_interval,
        delay_evaluation=rule.delay_evaluation,
    )


def sweep_node(train: Command, sweep: Sweep) -> SweepNode:
    """`train` (a pipeline node of the train component) swept; the command node itself leaves the pipeline."""
    return train.sweep(
        primary_metric=PRIMARY_METRIC,
        goal=GOAL,
        sampling_algorithm=SAMPLING,
        search_space=search_space(sweep.space),
        early_termination_policy=bandit_policy(sweep.rule),
        max_total_trials=sweep.limits.max_total_trials,
        max_concurrent_trials=sweep.limits.max_concurrent_trials,
        timeout=sweep.limits.timeout_s or None,
    )
