"""Everything that runs only on a developer's machine: the `local` pipeline backend (jobs, deployments and
router as processes), Azurite, the timer loop and the `python -m local_stack up|status|down` command.

The Function app reaches it only when PIPELINE_BACKEND=local (function_app/backends/__init__.py); it is
left out of the published Function package (.funcignore).
"""
