"""The method's settings as typed objects, each checked once, before any work: `method` (MethodSettings),
`data.loader` (LoaderSettings) and `optimizer` (OptimizerSettings). Each config group's YAML names its class as
`_target_`, so Hydra builds it; building it checks every closed-set key, range and cross-key rule, and a bad
value is one line naming the key and what it may be.

A field's type says what it takes (a `Literal` is a closed set; `X | None` may be null); its metadata `range`
bounds a number: (low, high, brackets), e.g. (0, 1, "[)") for 0 <= x < 1.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from break_a_scene.errors import UserInputError
from break_a_scene.lora import LoraSettings
from break_a_scene.optim import adamw, check_state_bits

Trainable = Literal["tokens", "all", "cross_attention_kv", "lora"]
MaskNormalization = Literal["none", "area"]
MaskDownsampling = Literal["nearest", "max"]
AttentionCapture = Literal["loss_layers", "released"]
AttentionKeys = Literal["all", "first"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
Quantized = Literal["int8", "nf4"]
ReplaceBackdrop = Literal["random", "photo"]
ReplacePlaces = Literal["random", "scene"]
Implementation = Literal["auto", "fused", "foreach", "for_loop"]
# keys renamed in a release, refused with their new name
RENAMED = {"method.compile_unet": "method.compile_denoiser"}


def bounded(default, low=None, high=None, brackets: str = "[]", hint: str = ""):
    """A number field with bounds; `brackets` says whether each end is included: "[]", "[)", "(]", "()"."""
    return field(default=default, metadata={"range": (low, high, brackets), "hint": hint})


def hinted(default, hint: str):
    """A field whose refusal adds `hint` (what a good value looks like)."""
    return field(default=default, metadata={"hint": hint})


def _render(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _type_problem(value: object, hint: object) -> str | None:
    """Why `value` does not fit the type `hint`, or None where it does."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [arg for arg in args if arg is not type(None)]
        problems = [_type_problem(value, arg) for arg in rest]
        return None if None in problems else problems[0] + (", or null" if type(None) in args else "")
    if origin is Literal:
        return None if value in args and type(value) is type(args[args.index(value)]) else \
            f"use one of {', '.join(_render(a) for a in args)}"
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return f"must be a list ([...]) of {args[0].__name__}"
        inner = [_type_problem(item, args[0]) for item in value]
        return next((f"each item {p}" for p in inner if p), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if hint is str:
        return None if isinstance(value, str) else "must be text"
    return None


def _range_problem(value: float, bounds: tuple) -> str | None:
    low, high, brackets = bounds
    below = low is not None and (value < low if brackets[0] == "[" else value <= low)
    above = high is not None and (value > high if brackets[1] == "]" else value >= high)
    if not (below or above):
        return None
    parts = []
    if low is not None:
        parts.append(f"{'at least' if brackets[0] == '[' else 'above'} {low}")
    if high is not None:
        parts.append(f"{'at most' if brackets[1] == ']' else 'below'} {high}")
    return "must be " + " and ".join(parts)


def check_fields(settings: object, group: str, bounds: dict[str, tuple] | None = None) -> None:
    """Every field of the dataclass `settings` against its type and its range (the field's metadata, or
    `bounds[name]`); the first that does not fit is one line naming `group.name=value` and what it may be."""
    hints = typing.get_type_hints(type(settings))
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        problem = _type_problem(value, hints[spec.name])
        limits = (bounds or {}).get(spec.name, spec.metadata.get("range"))
        if problem is None and limits is not None and value is not None:
            problem = _range_problem(value, limits)
        if problem:
            hint = spec.metadata.get("hint")
            raise UserInputError(f"{group}.{spec.name}={_render(value)}: "
                                 f"{f'{problem} ({hint})' if hint else problem}.")


class Checked:
    """A settings dataclass whose fields are checked against their types and ranges when it is made."""

    group: typing.ClassVar[str]  # the config key the settings live under, for the messages

    def __post_init__(self) -> None:
        check_fields(self, self.group)
        self.check_rules()

    def refuse(self, setting: str, problem: str) -> typing.NoReturn:
        raise UserInputError(f"{self.group}.{setting}: {problem}.")

    def check_rules(self) -> None:
        """Rules between keys (none by default)."""

    def as_dict(self) -> dict:
        return asdict(self)


def _lora_settings(value: object) -> LoraSettings:
    if isinstance(value, LoraSettings):
        return value
    if not isinstance(value, dict):
        raise UserInputError(f"method.lora={_render(value)}: must be a mapping of LoRA settings (conf/method/).")
    known = {spec.name for spec in fields(LoraSettings)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise UserInputError(f"method.lora.{unknown[0]} is not a LoRA setting; use {', '.join(sorted(known))}.")
    lora = LoraSettings(**value)
    check_fields(lora, "method.lora", {name: (0, None, "()") for name in ("rank", "alpha", "lr")})
    return lora


@dataclass
class MethodSettings(Checked):
    """`method`: what Break-A-Scene trains, with which losses, and how (conf/method/break_a_scene.yaml says what
    each key does)."""

    group: typing.ClassVar[str] = "method"

    phase1_steps: int = bounded(400, 0)
    phase2_steps: int = bounded(400, 0)
    phase1_lr: float = bounded(5e-4, 0, None, "()")
    phase2_lr: float = bounded(2e-6, 0, None, "()")
    masked_loss: bool = True
    mask_normalization: MaskNormalization = "none"
    lambda_attention: float = bounded(0.01, 0)
    mask_downsampling: MaskDownsampling = "nearest"
    lambda_prior: float = bounded(1.0, 0)
    lambda_contrastive: float = bounded(0.0, 0)
    contrastive_temperature: float = bounded(0.1, 0, None, "()")
    lambda_ema_teacher: float = bounded(0.0, 0)
    ema_decay: float = bounded(0.99, 0, 1, "[)")
    attention_resolution_divisor: int = bounded(4, 1)
    attention_capture: AttentionCapture = "loss_layers"
    attention_layers: list[int] | None = None
    attention_keys: AttentionKeys = "all"
    gradient_checkpointing: bool = False
    compile_denoiser: CompileMode | None = None
    compile_backend: str = "inductor"
    cache_latents: bool = True
    low_precision_frozen: bool = True
    freeze_text_encoder: bool = False
    phase1_trainable: Trainable = "tokens"
    phase2_trainable: Trainable = "all"
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantize_frozen: Quantized | None = None

    def __post_init__(self) -> None:
        self.lora = _lora_settings(self.lora)
        super().__post_init__()

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + self.phase2_steps

    def check_rules(self) -> None:
        if self.total_steps == 0:
            self.refuse("phase1_steps and method.phase2_steps", "both are 0, so there is nothing to train (the "
                        "method's defaults are 400 and 400)")
        if self.lambda_ema_teacher and not self.masked_loss:
            self.refuse(f"lambda_ema_teacher={self.lambda_ema_teacher}", "it splits the masked loss by concept: it "
                        "needs method.masked_loss=true (or set method.lambda_ema_teacher=0)")
        if self.attention_layers is not None and (not self.attention_layers or min(self.attention_layers) < 0):
            self.refuse(f"attention_layers={self.attention_layers}", "must be null (every layer at the loss side) "
                        "or a non-empty list of indices from 0")
        if self.quantize_frozen and not self.frozen_parts():
            self.refuse(f"quantize_frozen={self.quantize_frozen}", "it holds the weights no phase trains quantized, "
                        f"but this run trains the whole denoiser and text encoders (phase2_trainable="
                        f"{self.phase2_trainable}); use variant=lora")

    def frozen_parts(self) -> set[str]:
        """Which of "denoiser" and "text_encoders" no phase trains (adapters and token rows aside)."""
        phases = {self.phase1_trainable, self.phase2_trainable}
        frozen = set() if phases & {"all", "cross_attention_kv"} else {"denoiser"}
        if "all" not in phases or self.freeze_text_encoder:
            frozen.add("text_encoders")
        return frozen


@dataclass
class LoaderSettings(Checked):
    """`data.loader`: how union sampling draws each training sample (conf/data/scene.yaml says what each key
    does)."""

    group: typing.ClassVar[str] = "data.loader"

    batch_size: int = bounded(1, 1)
    num_workers: int = bounded(0, 0)
    union_sampling: bool = True
    flip_p: float = bounded(0.5, 0, 1)
    prompt_prefix: str = "a photo of "
    solid_background: bool = False
    replace_p: float = bounded(0.0, 0, 1)
    replace_full_loss: bool = False
    replace_origin_loss: bool = False
    replace_backdrop: ReplaceBackdrop = "random"
    replace_places: ReplacePlaces = "random"
    replace_from_step: int = bounded(0, 0, hint="0: re-place from the start; ${method.phase1_steps}: in phase 2 only")
    mix_photos_p: float = bounded(0.0, 0, 1)
    degrade_noise: float = bounded(0.0, 0)
    degrade_power: float = bounded(1.0, 0, None, "()")
    layout_phrases: list[str] | None = hinted(None, "one phrase for each vertical band from left to right, e.g. "
                                                   "[' on the left', ' in the middle', ' on the right']")

    def check_rules(self) -> None:
        if self.layout_phrases is not None and not self.layout_phrases:
            self.refuse("layout_phrases=[]", "give at least one phrase (one for each vertical band from left to "
                        "right), or null for none")


@dataclass
class OptimizerSettings(Checked):
    """`optimizer`: AdamW's settings (the learning rate is the method's, per phase). Called with the parameters
    and the learning rate, it makes the optimizer."""

    group: typing.ClassVar[str] = "optimizer"

    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = bounded(1e-2, 0)
    eps: float = bounded(1e-8, 0, None, "()")
    implementation: Implementation = "auto"
    state_bits: Literal[32, 8] = 32

    def check_rules(self) -> None:
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            self.refuse(f"betas={self.betas}", "must be two numbers, each at least 0 and below 1")
        check_state_bits(self.state_bits)

    def __call__(self, params, lr: float):
        return adamw(params, lr=lr, betas=tuple(self.betas), weight_decay=self.weight_decay, eps=self.eps,
                     implementation=self.implementation, state_bits=self.state_bits)
