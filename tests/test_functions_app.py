"""The Function app as the Azure Functions host and Python worker see it.

How the worker (Azure/azure-functions-python-worker, loader.index_function_app and
dispatcher.load_function_metadata) finds the app: it requires <app root>/PYTHON_SCRIPT_FILE_NAME
(default function_app.py) to exist, imports the module named by that file's STEM with the app root
on sys.path, and takes the single FunctionRegister among `module.__dir__()`. Then, per function,
every binding name must be a Python parameter and back (functions.validate_function_params), with
annotations resolved by typing.get_type_hints and accepted by the binding's converter.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from azure.functions import meta

from function_app.settings import setting_names
from tests.function_index import indexed_functions

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: the module is imported once per process, with the app root on sys.path (the worker's
# add_script_root_to_sys_path adds AzureWebJobsScriptRoot; the only sys.path edit tests/test_no_path_edits.py allows).
_WORKER_STYLE_INDEX = """
import importlib, json, os, pathlib, sys
sys.path.insert(0, os.getcwd())  # mimics the Functions worker
script = os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py")
assert os.path.exists(script), "the worker falls back to the v1 model when this file is missing"
module = importlib.import_module(pathlib.Path(script).stem)
from azure.functions import FunctionRegister
apps = [getattr(module, n) for n in module.__dir__() if isinstance(getattr(module, n, None), FunctionRegister)]
assert len(apps) == 1, apps
print(json.dumps({
    "module_file": os.path.relpath(module.__file__),
    "functions": {f.get_function_name(): json.loads(f.get_function_json()) for f in apps[0].get_functions()},
    "azure_ai_ml_imported": any(m.startswith("azure.ai.ml") for m in sys.modules),
}))
"""


def _index(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _WORKER_STYLE_INDEX],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def indexed() -> dict:
    return _index()


def test_worker_imports_the_package_and_finds_one_app(indexed: dict) -> None:
    assert (REPO / "function_app.py").is_file() and (REPO / "host.json").is_file()
    # A regular package shadows the same-named module beside it: the worker loads the package.
    assert indexed["module_file"] == os.path.join("function_app", "__init__.py")
    assert sorted(indexed["functions"]) == ["advance_pipeline", "follow_uploads", "http_app_func"]
    assert not indexed["azure_ai_ml_imported"], "azure-ai-ml must load only with the aml backend"


def test_root_file_loaded_by_path_gives_the_same_app() -> None:
    # `python -c` has the current folder, the app root, first on sys.path already.
    code = (
        "import runpy; g = runpy.run_path('function_app.py'); "
        "print(sorted(f.get_function_name() for f in g['app'].get_functions()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['advance_pipeline', 'follow_uploads', 'http_app_func']"


def test_binding_json_is_what_the_host_needs(indexed: dict) -> None:
    functions = indexed["functions"]
    # An Event Grid trigger, not a blob trigger: the host hands it the event (subject, type), never the blob's
    # bytes, which the blob trigger's InputStream binding reads into the worker before the function runs.
    assert functions["follow_uploads"]["bindings"] == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]
    assert functions["advance_pipeline"]["bindings"] == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%TIMER_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ]
    http = functions["http_app_func"]["bindings"]
    assert http[0]["type"] == "httpTrigger" and http[0]["authLevel"] == "FUNCTION" and http[0]["route"] == "/{*route}"
    assert http[1] == {"direction": "OUT", "type": "http", "name": "$return"}


def test_every_binding_name_is_a_parameter_with_an_accepted_annotation() -> None:
    for function in indexed_functions().values():
        user_function = function.get_user_function()
        params = set(inspect.signature(user_function).parameters)
        bound = {b.name for b in function.get_bindings() if b.name != "$return"}
        hints = typing.get_type_hints(user_function)
        if "context" in params and "context" not in bound:
            params.discard("context")  # the worker passes the invocation context itself
        assert params == bound, function.get_function_name()
        for binding in function.get_bindings():
            if binding.name in hints:
                converter = meta.get_binding_registry().get(binding.type)
                assert converter.check_input_type_annotation(hints[binding.name]), (
                    function.get_function_name(),
                    binding.name,
                )


def test_host_json_uses_the_v4_bundle_and_the_api_prefix() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.0.0, 5.0.0)"}
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_sample_settings_list_every_setting_the_code_reads() -> None:
    values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    assert set(values) == set(setting_names()) | {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"}
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
