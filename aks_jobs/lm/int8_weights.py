"""Int8 linear layers for CPU serving: weights int8 per output channel, activations int8 per row, exact int32 sums.

Decoding on a CPU is bound by reading the weights once per token (~500 MB in float32 for GPT-2 124M); int8
weights read a quarter of that, and the int8 matrix multiply (VNNI) also speeds up the batched steps.

Each row of the input (one token of one sequence) is quantized on its own scale and the products are summed in
int32, which is exact, so a row's output depends on that row alone: a sequence decodes to the same tokens
whatever it shares a batch with, as the decode loop promises for seeds. (torch.ao's quantize_dynamic would be
as fast but scales activations per tensor, so a row would change with its neighbours; see
docs/performance.md for the measured choice.)
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import GELUTanh, NewGELUActivation
from transformers.pytorch_utils import Conv1D

_INT8_MAX = 127
# oneDNN's int8 linear with prepacked weights (x86 builds of torch; elsewhere torch._int_mm alone), for batched
# decode steps: below 8 rows it was slower, and a prefill's many rows and row counts (a kernel built per count)
# stay with torch._int_mm. Measured in docs/performance.md.
_ONEDNN_INT8 = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_prepack")
_PACKED_MIN_ROWS, _PACKED_MAX_ROWS = 8, 64
_ZERO_POINT = 128


class Int8Linear(nn.Module):
    """y = x W^T + b with W as int8 and one float32 scale per output feature. Float32 in, float32 out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """`weight` is [out_features, in_features] as nn.Linear holds it."""
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / _INT8_MAX
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", torch.round(weight / scale[:, None]).to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed: torch.Tensor | None = None
        self._zero_points: torch.Tensor | None = None

    def _packed_weight(self) -> torch.Tensor | None:
        """The weight in oneDNN's own blocked layout, packed on first use (the output head's 32-row product: 4.3
        ms against 6.1 ms with torch._int_mm). None where this build of torch lacks the kernel."""
        if self._packed is None and _ONEDNN_INT8:
            self._packed = torch.ops.onednn.qlinear_prepack(self.weight, None)
            self._zero_points = torch.zeros(self.out_features, dtype=torch.int64)
        return self._packed

    def __getstate__(self) -> dict:
        # The packed weight is an opaque oneDNN tensor (it cannot be copied or pickled): packed again on use.
        return {**super().__getstate__(), "_packed": None, "_zero_points": None}

    @classmethod
    def from_float(cls, layer: nn.Linear | Conv1D) -> Int8Linear:
        # Hugging Face's Conv1D holds its weight transposed: [in_features, out_features].
        weight = layer.weight.t() if isinstance(layer, Conv1D) else layer.weight
        return cls(weight, layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        row_max = rows.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        quantized = torch.round(rows * (_INT8_MAX / row_max))
        if _PACKED_MIN_ROWS <= rows.shape[0] <= _PACKED_MAX_ROWS and (packed := self._packed_weight()) is not None:
            # The same exact int32 sums, scaled per output feature by oneDNN. Its fast kernel takes unsigned
            # activations (signed ones fall back to a reference loop, ~100x slower): shifted by zero point 128.
            shifted = quantized.add_(_ZERO_POINT).to(torch.uint8)
            out = torch.ops.onednn.qlinear_pointwise(
                shifted, 1.0, _ZERO_POINT, packed, self.weight_scale, self._zero_points, None, 1.0, 0,
                torch.float32, "none", [], "",
            )  # fmt: skip
            out.mul_(row_max / _INT8_MAX)
        else:
            # weight.t() is a transposed view: the layout oneDNN's int8 kernel reads fastest (measured).
            out = torch._int_mm(quantized.to(torch.int8), self.weight.t()).float()
            out.mul_(self.weight_scale).mul_(row_max / _INT8_MAX)  # oneDNN's order: the same floats either way
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_linear_layers(model: nn.Module) -> int:
    """Replace every nn.Linear and Conv1D of `model` (in place, the output head included) by an Int8Linear.

    Embeddings and layer norms stay float32; a head tied to the embeddings gets its own int8 copy while the
    embedding keeps the float weights. Returns how many layers were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.Linear, Conv1D)):
                setattr(parent, name, Int8Linear.from_float(child))
                replaced += 1
    if not replaced:
        raise ValueError(f"{type(model).__name__} has no linear layers to quantize")
    return replaced


def fuse_gelu(model: nn.Module) -> int:
    """Replace GPT-2's gelu_new (tanh, pow, four multiplies and adds: an eager op each) by the same function as
    one fused op; with int8 layers those small ops are a noticeable part of a CPU step. Returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
                replaced += 1
    return replaced
