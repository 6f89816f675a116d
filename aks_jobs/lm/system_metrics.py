"""The run's system metrics (MLflow's own monitor: CPU and memory, GPU where nvidia-ml-py sees one) as a
short series for train_summary.json, which the UI plots beside the loss curve.

MLflow samples every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default) while the run is
open; the series is read back from the run once it has ended (the monitor flushes on end_run).
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.exceptions import MlflowException

from aks_jobs.lm.loss_curve import evenly

log = logging.getLogger(__name__)

MAX_SAMPLES = 60  # ~4K characters of JSON; the summary rides in one status-table property
# MLflow's names (mlflow/system_metrics/metrics) -> the summary's; GPU ones for device 0.
SERIES = {
    "system/cpu_utilization_percentage": "cpu_percent",
    "system/system_memory_usage_megabytes": "memory_mb",
    "system/gpu_0_utilization_percentage": "gpu_percent",
    "system/gpu_0_memory_usage_megabytes": "gpu_memory_mb",
}


def system_series(run_id: str, max_samples: int = MAX_SAMPLES) -> list[dict[str, float]]:
    """[{s: seconds since the first sample, cpu_percent, memory_mb[, gpu_percent, gpu_memory_mb]}] of an
    ended run; [] when the store cannot say (a failed read never fails training)."""
    client = mlflow.MlflowClient()
    samples: dict[int, dict[str, float]] = {}
    try:
        for name, key in SERIES.items():
            for metric in client.get_metric_history(run_id, name):
                sample = samples.setdefault(metric.step, {"timestamp": metric.timestamp})
                sample[key] = round(metric.value, 1)
    except MlflowException as error:
        log.warning("system metrics of run %s not read back: %s", run_id, error)
        return []
    ordered = [samples[step] for step in sorted(samples)]
    start = ordered[0]["timestamp"] if ordered else 0
    for sample in ordered:
        sample["s"] = round((sample.pop("timestamp") - start) / 1000, 1)
    return evenly(ordered, max_samples)
