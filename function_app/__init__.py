"""Control plane: Azure Functions wiring, status table, orchestration, backends, HTTP API.

This package is what the Azure Functions Python worker indexes. The worker imports the module
named by the stem of PYTHON_SCRIPT_FILE_NAME (default function_app.py, which must exist beside
host.json) and takes the single FunctionApp among its attributes. A regular package shadows a
same-named module in the same folder, so `import function_app` loads THIS file, not the root
function_app.py; hence the app is exposed here. tests/test_functions_app.py
(test_worker_imports_the_package_and_finds_one_app) pins it.
"""

from function_app.functions import app

__all__ = ["app"]
