"""What passes between the planes, typed in one place: the blob layout and names, the snapshot manifest, the
train summary, the evaluation, the scoring request and response, and the HTTP API's answers.

Jobs, control plane and UI all import these; pydantic only (no torch, transformers, azure or mlflow), so the
Function app and the UI can import them cheaply.
"""
