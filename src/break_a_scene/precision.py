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


_NORMALIZATIONS = (torch.nn.GroupNorm, torch.nn.LayerNorm)


def castable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters `FrozenWeights` may hold in the low dtype: all but the normalization layers' (a few
    thousand numbers). A norm keeps float32 weights: CUDA's autocast runs norms in float32 anyway, and the CPU's
    group_norm refuses a float32 input with a bfloat16 weight, the input a quantized layer (QLoRA) gives."""
    norms = {id(p) for m in module.modules() if isinstance(m, _NORMALIZATIONS) for p in m.parameters(recurse=False)}
    return [p for p in module.parameters() if id(p) not in norms]


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
                # on the host (before the model moves) the float32 tensor itself is kept: no second copy
                value = param.detach() if param.device.type == "cpu" else param.detach().to("cpu", copy=True)
                self.master[id(param)] = (param, value)
                param.data = param.data.to(self.dtype)

    def reload(self, named: Iterable[tuple[str, torch.nn.Parameter]], state: dict[str, torch.Tensor]) -> None:
        """The held float32 values of the parameters among `named` from a checkpoint's state (a resumed run);
        the parameters themselves take the state when the checkpoint loads."""
        for name, param in named:
            if id(param) in self.master and name in state:
                self.master[id(param)] = (param, state[name].detach().to("cpu", torch.float32, copy=True))

    def restore(self) -> None:
        """Every held parameter back to its float32 values."""
        for param, value in self.master.values():
            param.data = value.to(param.device)
        self.master.clear()

    def full_precision_state(self, named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
        """Name -> float32 value of every held parameter among `named`: what a checkpoint must store."""
        return {name: self.master[id(param)][1] for name, param in named if id(param) in self.master}


QUANTIZED_FORMS = ("int8", "nf4")


def quantize_linears(module: torch.nn.Module, form: str) -> int:
    """Replace every nn.Linear of `module` by a bitsandbytes layer holding the same weights in 8 bits (LLM.int8)
    or 4 bits (NF4): frozen weights in a quarter or an eighth of their float32 memory, as QLoRA holds a base
    model under its adapters (peft puts adapters on these layers as on plain ones). NF4 computes in bfloat16 on
    a GPU and float32 on the CPU. Returns how many layers were replaced."""
    import bitsandbytes as bnb

    if form not in QUANTIZED_FORMS:
        raise ValueError(f"method.quantize_frozen must be one of {', '.join(QUANTIZED_FORMS)} or null, not {form!r}")
    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    replaced = 0
    for name, child in list(module.named_modules()):
        if type(child) is not torch.nn.Linear:
            continue
        weight, bias = child.weight.detach(), child.bias
        if form == "nf4":
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias is not None,
                                      compute_dtype=compute, quant_type="nf4", device="meta")
            layer.weight = bnb.nn.Params4bit(weight.float(), requires_grad=False, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias is not None,
                                        has_fp16_weights=False, device="meta")
            layer.weight = bnb.nn.Int8Params(weight.float(), requires_grad=False, has_fp16_weights=False)
        if bias is not None:
            layer.bias = torch.nn.Parameter(bias.detach().float(), requires_grad=False)
        owner, _, attribute = name.rpartition(".")
        # moving a bitsandbytes layer to its device is what quantizes it
        setattr(module.get_submodule(owner) if owner else module, attribute, layer.to(weight.device))
        replaced += 1
    return replaced
