"""Azure Functions entry point (PYTHON_SCRIPT_FILE_NAME defaults to this file name).

The Python worker requires this file beside host.json, then imports the module named by its stem,
`function_app`. The function_app/ package beside it takes precedence on import, so the worker
indexes function_app/__init__.py; this file names the same single app for anything that loads it
by path instead (e.g. runpy).
"""

from function_app.functions import app  # noqa: F401
