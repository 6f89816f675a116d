"""The app's functions as the worker indexes them, once per test process.

FunctionApp.get_functions() registers the names it returns and raises on a second call (the
worker calls it exactly once), so tests share one result.
"""
from __future__ import annotations

from functools import lru_cache

import azure.functions as func


@lru_cache(maxsize=1)
def indexed_functions() -> dict[str, func.Function]:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}
