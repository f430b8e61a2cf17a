"""LoRA phase 2 (`method.phase2_trainable=lora`): adapters instead of the whole denoiser and text encoders.

The released code's authors describe an extracted asset as "a text token plus LoRA weights"; MagicTailor
(built on Break-A-Scene) and diffusers' pivotal tuning train LoRA in their second phase. Adapters go on the
denoiser's attention projections (the text encoders' optionally), through peft; the token rows keep training at
`method.phase2_lr` (or stay frozen). The asset is small: the token rows in diffusers' textual-inversion
form, one (N, d) tensor per text encoder, and the LoRA weights in the file `load_lora_weights` reads (adapters
on the text encoders diffusers' loader takes for the family: CLIP's, not T5's).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from break_a_scene.families.base import ModelFamily
from break_a_scene.tokens import plain_token_embeddings, put_token_rows

TOKEN_EMBEDDINGS = "token_embeddings.safetensors"  # {text encoder attribute: (N, d)}, tokens in the manifest
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' default name, read by load_lora_weights


@dataclass
class LoraSettings:
    rank: int = 32
    alpha: float = 32.0
    lr: float = 1.0e-4
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    text_encoders: bool = False
    text_encoder_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    dora: bool = False
    train_tokens: bool = True


def _config(settings: LoraSettings, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, init_lora_weights="gaussian",
                      target_modules=list(targets), use_dora=settings.dora)


def add_lora(family: ModelFamily, settings: LoraSettings) -> None:
    """Adapters on the denoiser (and with `text_encoders`, on the family's `lora_text_encoders`); B starts at
    zero, so the model computes exactly what it did before."""
    family.denoiser.add_adapter(_config(settings, settings.target_modules))
    if settings.text_encoders:  # through peft itself: transformers' add_adapter asks for a newer peft
        from peft import inject_adapter_in_model

        for name, encoder in family.named_text_encoders():
            if name not in family.lora_text_encoders:
                continue
            config = _config(settings, settings.text_encoder_target_modules)
            inject_adapter_in_model(config, encoder)
            encoder.peft_config = {"default": config}


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [param for name, param in module.named_parameters() if ".lora_" in name]


def adapted_modules(family: ModelFamily) -> dict[str, torch.nn.Module]:
    """{pipeline attribute: module} of the parts that carry LoRA adapters."""
    parts = {family.denoiser_name: family.denoiser, **dict(family.named_text_encoders())}
    return {name: module for name, module in parts.items() if lora_parameters(module)}


def save_lora_asset(family: ModelFamily, encoder_token_ids: list[list[int]], folder: Path) -> None:
    """The token rows of every text encoder (each at its own ids: `PlaceholderTokens.encoder_ids`) and the LoRA
    weights (with their rank and alpha) into `folder`."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    ids = encoder_token_ids if len(encoder_token_ids) > 1 else encoder_token_ids * len(family.text_encoders)
    rows = {name: encoder.get_input_embeddings().weight[token_ids].detach().float().cpu().contiguous()
            for (name, encoder), token_ids in zip(family.named_text_encoders(), ids)}
    save_file(rows, str(folder / TOKEN_EMBEDDINGS))
    kwargs = {}
    for name, module in adapted_modules(family).items():
        kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
        kwargs[f"{name}_lora_adapter_metadata"] = module.peft_config["default"].to_dict()
    family.pipeline_class.save_lora_weights(str(folder), weight_name=LORA_WEIGHTS, **kwargs)


def load_lora_asset(pipe, folder: str | Path, tokens: list[str], adapter_name: str | None = None) -> None:
    """Put an asset onto a pipeline of its base model: its token rows (`load_asset_rows`), then the adapters with
    `load_lora_weights` (under `adapter_name`, for several assets on one pipeline)."""
    load_asset_rows(pipe, folder, tokens)
    pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHTS, adapter_name=adapter_name)


def load_asset_rows(pipe, folder: str | Path, tokens: list[str]) -> None:
    """An asset's token rows into each text encoder of the pipeline under the names `tokens` (its own, or new
    ones when assets are composed): `tokens.put_token_rows`, what diffusers' `load_textual_inversion` does, for
    T5 and for SD 3's pipeline too, which has no such loader."""
    from safetensors.torch import load_file

    rows = load_file(str(Path(folder) / TOKEN_EMBEDDINGS))
    for name, embeddings in rows.items():
        tokenizer = getattr(pipe, name.replace("text_encoder", "tokenizer"))
        put_token_rows(tokenizer, getattr(pipe, name), list(tokens), embeddings)


def _plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The module without adapters, holding the (already merged) base weights, sharing their storage."""
    state = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if ".lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.detach()
    diffusers_model = hasattr(type(module), "from_config")  # a transformers model takes its config instead
    with torch.device("meta"):
        plain = type(module).from_config(module.config) if diffusers_model else type(module)(module.config)
    plain.load_state_dict(state, assign=True, strict=True)
    for name, buffer in list(plain.named_buffers()):  # buffers outside the state dict (position ids) as well
        if buffer.is_meta:
            owner, _, attr = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(attr, module.get_buffer(name), persistent=False)
    return plain


@contextlib.contextmanager
def merged_lora(family: ModelFamily):
    """Within the block the family holds plain modules with the adapters merged into their weights (what
    a fused export saves); afterwards the adapters are back and the base weights are bit for bit as before."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = adapted_modules(family)
    layers = [m for module in adapted.values() for m in module.modules() if isinstance(m, BaseTunerLayer)]
    originals = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    for layer in layers:
        layer.merge()
    saved = {name: getattr(family, name) for name in adapted}
    try:
        with plain_token_embeddings(family.text_encoders):  # the learned rows as saving wants them
            copies = {name: _plain_copy(module) for name, module in adapted.items()}
        for name, module in copies.items():
            setattr(family, name, module)
        yield family
    finally:
        for name, module in saved.items():
            setattr(family, name, module)
        for layer, original in zip(layers, originals):
            layer.unmerge()
            layer.get_base_layer().weight.data.copy_(original)
