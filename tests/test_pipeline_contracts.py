"""pipeline_contracts: light enough for every plane to import, and each contract refuses what breaks it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pipeline_contracts import blob_layout
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.scoring import NoGeneration, parse_response, smoke_request
from pipeline_contracts.snapshot_ref import SnapshotRef
from tests.contract_samples import evaluation, score_response


def test_importing_every_contract_loads_no_torch_transformers_azure_or_mlflow() -> None:
    code = (
        "import importlib, pkgutil, sys, pipeline_contracts\n"
        "names = [m.name for m in pkgutil.iter_modules(pipeline_contracts.__path__, 'pipeline_contracts.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'azure', 'mlflow'})\n"
        "print(len(names), heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    count, heavy = done.stdout.split(" ", 1)
    assert int(count) >= 7 and heavy.strip() == "[]"


def test_snapshot_names_carry_their_utc_stamp_and_sort_by_it() -> None:
    moment = datetime(2026, 11, 23, 10, 15, 0, tzinfo=UTC)
    snapshot = blob_layout.snapshot_stem(moment) + ".txt"
    assert snapshot == "combined_data_20261123_101500.txt"
    assert blob_layout.manifest_file(snapshot) == "combined_data_20261123_101500.manifest.json"
    assert blob_layout.snapshot_file(blob_layout.manifest_file(snapshot)) == snapshot
    assert blob_layout.stamp_of(snapshot) == blob_layout.stamp_of(blob_layout.manifest_file(snapshot)) == moment
    assert blob_layout.stamp_of("combined_data_latest.txt") is None
    assert blob_layout.cache_entry("ab" * 32, "limits-1") == f"{'ab' * 32}.limits-1.json"
    assert blob_layout.run_output("2026 11/23", "snapshot") == "runs/2026-11-23/snapshot/"


def test_a_snapshot_ref_names_a_snapshot_file_only() -> None:
    assert SnapshotRef(snapshot="combined_data_20261123_101500.txt").snapshot.endswith(".txt")
    for name in ("../inputs/a.pdf", "combined_data_20261123_101500.manifest.json", ""):
        with pytest.raises(ValidationError, match="snapshot"):
            SnapshotRef(snapshot=name)


def test_an_evaluation_refuses_an_unknown_decision_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="decision"):
        Evaluation.model_validate(evaluation() | {"decision": "maybe"})
    assert Evaluation.model_validate(evaluation(registered={"name": "m", "version": 3})).registered.version == "3"


def test_a_scoring_answer_is_read_once_even_when_encoded_twice() -> None:
    assert parse_response(score_response(" dusk.")).text == " dusk."
    assert parse_response(json.dumps(score_response(" twice."))).text == " twice."
    with pytest.raises(NoGeneration, match="no generation"):
        parse_response('{"generations": [[]]}')
    assert smoke_request("Hi") == {"prompt": "Hi", "max_new_tokens": 20, "do_sample": False}
    assert smoke_request("Hi", stream=True)["stream"] is True
