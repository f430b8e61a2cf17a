"""Numeric precision: frozen weights held in the mixed-precision dtype, and TF32 matmuls.

Under mixed precision, autocast casts every float32 weight to float16/bfloat16 at every use: for a frozen
UNet that is a copy of 865 M parameters and hundreds of kernel launches per step that buy nothing, since the
weights never change. `FrozenWeights` casts frozen parameters once and keeps their float32 values in host
memory, so they come back bit for bit when a phase trains them, when a checkpoint is written and when
training ends (the export saves float32 weights).
"""

from __future__ import annotations

from typing import Iterable

import torch

_AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype Lightning's `precision` computes in under autocast; None for true-precision settings."""
    return _AUTOCAST_DTYPES.get(str(precision))


def set_tf32(enabled: bool) -> None:
    """TF32 tensor-core matmuls and convolutions for float32 work on GPUs that have them (Ampere and newer):
    inputs rounded to a 10-bit mantissa, float32 accumulation. No effect on the CPU."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


class FrozenWeights:
    """Frozen float32 parameters held in `dtype`, their float32 values kept on the host until they train."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.master: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}  # id(param) -> (param, float32 value)

    def update(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Cast the frozen float32 parameters among `params` to the low dtype; give the trainable ones that
        were cast their float32 values back."""
        for param in params:
            if param.requires_grad:
                if id(param) in self.master:
                    param.data = self.master.pop(id(param))[1].to(param.device)
            elif param.dtype == torch.float32 and id(param) not in self.master:
                self.master[id(param)] = (param, param.detach().to("cpu", copy=True))
                param.data = param.data.to(self.dtype)

    def restore(self) -> None:
        """Every held parameter back to its float32 values."""
        for param, value in self.master.values():
            param.data = value.to(param.device)
        self.master.clear()

    def full_precision_state(self, named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
        """Name -> float32 value of every held parameter among `named`: what a checkpoint must store."""
        return {name: self.master[id(param)][1] for name, param in named if id(param) in self.master}
