"""How much one scoring server takes on, sized for the device it runs on; SCORING_* settings change any of them.

On a 2-core CPU node an int8 decode step of GPT-2 124M costs ~20 ms for one row and ~60-80 ms for 32 (32 rows
give ~1.4x the tokens/s of 16; their KV cache takes ~2.4 GB), so the largest request (8 rows x 128 tokens)
finishes in ~10 s beside a full batch, inside the deployment's deadline; a GPU takes far more rows and tokens
per step (figures: docs/performance.md). Requests beyond `max_requests` (running plus queued)
are answered 503 with Retry-After at once, which also keeps server threads free for the health probe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEVICE_DEFAULTS = {
    "cpu": {
        "max_new_tokens": 128,
        "max_rows": 32,
        "max_request_rows": 8,
        "max_return_sequences": 5,
        "max_prompts": 8,
        "max_requests": 48,
        "request_timeout_s": 120.0,
    },
    "cuda": {
        "max_new_tokens": 512,
        "max_rows": 64,
        "max_request_rows": 32,
        "max_return_sequences": 8,
        "max_prompts": 32,
        "max_requests": 48,
        "request_timeout_s": 60.0,
    },
}


class ServingLimits(BaseSettings):
    """Per-request maxima and the server's own bounds. Read from SCORING_<NAME> environment variables."""

    model_config = SettingsConfigDict(env_prefix="SCORING_", frozen=True)

    device: Literal["cpu", "cuda"] = "cpu"
    max_new_tokens: int = Field(128, ge=1)
    max_return_sequences: int = Field(5, ge=1)
    max_prompts: int = Field(8, ge=1)
    max_rows: int = Field(16, ge=1)  # sequences decoded together: the KV cache holds this many
    # Sequences of one request (prompts x num_return_sequences): half the cache, so no request holds it all.
    max_request_rows: int = Field(8, ge=1)
    max_prompt_chars: int = Field(16_384, ge=1)  # a 1,024-token context holds ~4,000 characters of English
    max_body_chars: int = Field(1_048_576, ge=1)
    max_requests: int = Field(48, ge=1)  # running + queued; more is 503. Below scoring_server_settings.THREADS
    request_timeout_s: float = Field(120.0, gt=0)  # from arrival to the last token, queueing included
    retry_after_s: int = Field(2, ge=1)
    # Decode steps as CUDA graphs (lm.graphed_forward): auto = on CUDA devices; off = eager steps everywhere,
    # to switch a regression off in a deployment without a new image.
    cuda_graphs: Literal["auto", "off"] = "auto"

    @property
    def use_cuda_graphs(self) -> bool:
        return self.device == "cuda" and self.cuda_graphs == "auto"

    @model_validator(mode="after")
    def _request_fits_the_cache(self) -> ServingLimits:
        if self.max_request_rows > self.max_rows:
            raise ValueError(f"max_request_rows ({self.max_request_rows}) must not exceed max_rows ({self.max_rows})")
        return self

    @classmethod
    def for_device(cls, device: str) -> ServingLimits:
        """The device's defaults, under any SCORING_* environment settings."""
        kind = "cuda" if device.startswith("cuda") else "cpu"
        defaults = _DEVICE_DEFAULTS[kind]
        # Settings from the environment win over these init values only when given: read them first.
        from_env = cls(device=kind).model_dump(exclude_unset=True)
        return cls(**{"device": kind, **defaults, **from_env})
