"""Separately trained LoRA assets composed on their shared base model at generation: the baseline a concept
library (one run over several pictures) must beat.

Two ways (`generation.compose_mode`): `lora` puts every asset's token rows and its LoRA adapters on the base (the
adapters summed, each scaled by its weight: diffusers' `set_adapters`); `rows` puts only the token rows, on the
untouched base (what textual inversion composes). Asset j (from 1, the `pipeline=` one first) names its tokens
`<j:name>`: `<asset0>` of the second asset is `<2:asset0>`, so the assets' own names never collide.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import DiffusionPipeline

from break_a_scene.devices import resolve_device
from break_a_scene.errors import UserInputError
from break_a_scene.export import check_export_files, read_manifest
from break_a_scene.generate import asset_base, export_family, pipeline_from
from break_a_scene.lora import load_asset_rows, load_lora_asset

COMPOSE_MODES = ("lora", "rows")


def composed_token(number: int, token: str) -> str:
    """Asset `number`'s token under composition: `<2:asset0>` for `<asset0>` of the second."""
    return f"<{number}:{token.strip('<>')}>"


def composed_tokens(paths: list[str]) -> list[list[str]]:
    """Each asset's tokens as the composed pipeline names them."""
    return [[composed_token(j, t) for t in read_manifest(path)["tokens"]] for j, path in enumerate(paths, 1)]


def check_composable(paths: list[str], mode: str, weights: list[float] | None) -> list[dict]:
    """The assets' manifests, once they are known to compose: LoRA assets of one base model and family at one
    resolution, no asset twice, a weight per asset when weights are given."""
    if mode not in COMPOSE_MODES:
        raise UserInputError(f"generation.compose_mode={mode!r} is not one of {', '.join(COMPOSE_MODES)}.")
    if len(set(map(str, paths))) != len(paths):
        raise UserInputError("generation.compose lists an asset twice (or the pipeline= one again); list each once.")
    manifests = [read_manifest(path) for path in paths]
    for path, manifest in zip(paths, manifests):
        if manifest.get("format") != "lora_asset":
            raise UserInputError(f"'{path}' is a full pipeline export; composing needs LoRA assets, which share their "
                                 f"base model (train each with variant=lora).")
        check_export_files(path)
    first = manifests[0]
    for key in ("base_model", "family", "resolution"):
        for path, manifest in zip(paths[1:], manifests[1:]):
            if manifest.get(key) != first.get(key):
                raise UserInputError(f"'{path}' was trained with {key} {manifest.get(key)!r} but '{paths[0]}' with "
                                     f"{first.get(key)!r}; composed assets share their base model.")
    if weights is not None and (len(weights) != len(paths) or any(w < 0 for w in weights)):
        raise UserInputError(f"generation.compose_weights must give one weight of at least 0 per asset ({len(paths)}: "
                             f"the pipeline= one first), or be null (1 each).")
    return manifests


def load_composed_pipeline(paths: list[str], mode: str = "lora", weights: list[float] | None = None,
                           device: str = "auto", dtype: str = "float32") -> DiffusionPipeline:
    """The assets' shared base model with every asset's token rows (renamed: `composed_tokens`) and, in `lora`
    mode, their adapters, each scaled by its weight."""
    manifests = check_composable(paths, mode, weights)
    names = composed_tokens(paths)
    adapters = [f"asset{j}" for j in range(1, len(paths) + 1)]

    def put_assets(pipe: DiffusionPipeline) -> None:
        for path, tokens, adapter in zip(paths, names, adapters):
            if mode == "lora":
                load_lora_asset(pipe, Path(path), tokens, adapter_name=adapter)
            else:
                load_asset_rows(pipe, Path(path), tokens)
        if mode == "lora":
            pipe.set_adapters(adapters, adapter_weights=list(weights) if weights else [1.0] * len(paths))

    root = asset_base(paths[0], manifests[0]["base_model"])
    pipe = pipeline_from(root, export_family(paths[0]), dtype, " + ".join(map(str, paths)), put_assets)
    return pipe.to(resolve_device(device))
