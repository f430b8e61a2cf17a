"""Images from a trained output: prompts with the learned tokens in, images and attention maps out.

Each image `NNNN.png` is written beside `NNNN_attn_<token>.png` (the token's cross-attention averaged
over the sampling steps, over the image) and `NNNN_attn.npz` (the raw maps); `samples.jsonl` indexes them
all and `index.html` shows them as a sortable contact sheet (also a W&B table with `wandb_table`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

from break_a_scene.devices import resolve_device
from break_a_scene.errors import UserInputError
from break_a_scene.export import check_export_files, read_manifest
from break_a_scene.families.base import ModelFamily, family_named
from break_a_scene.figures import heatmap_overlay
from break_a_scene.lora import load_lora_asset
from break_a_scene.models import import_own_model_modules, quiet_loading, read_model_index, resolve_model_dir
from break_a_scene.precision import set_tf32
from break_a_scene.report import wandb_table, write_contact_sheet
from break_a_scene.sampling import sample_images
from break_a_scene.tokens import token_slug

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of {} at the beach"


def default_prompts(tokens: list[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Each token alone, then all tokens together."""
    prompts = [template.format(token) for token in tokens]
    if len(tokens) > 1:
        prompts.append(template.format(" and ".join(tokens)))
    return prompts


def check_prompts(prompts: list[str], tokens: list[str]) -> None:
    """Every prompt names a learned token, and no token-like `<...>` that was not learned (it would be read
    as plain text and generate silently)."""
    for prompt in prompts:
        unknown = [word for word in re.findall(r"<[^<>\s]+>", prompt) if word not in tokens]
        if unknown:
            raise UserInputError(
                f"prompt {prompt!r} names {', '.join(unknown)}, which this pipeline did not learn; its tokens are "
                f"{', '.join(tokens)}."
            )
        if not any(token in prompt for token in tokens):
            raise UserInputError(f"prompt {prompt!r} uses none of the learned tokens {tokens}; put one in it.")


def asset_base(path: str | Path, base_model: str) -> Path:
    try:
        return resolve_model_dir(base_model)
    except UserInputError:
        raise UserInputError(
            f"'{path}' is a LoRA asset for the base model '{base_model}', which is neither a local directory nor in "
            f"the Hugging Face cache. Download it (`hf download {base_model}`) or put it back where it was "
            f"trained from (the manifest's base_model)."
        ) from None


def export_family(path: str | Path) -> type[ModelFamily]:
    """The model family an export was trained as (its manifest says; older exports: by its pipeline class)."""
    manifest = read_manifest(path)
    root = asset_base(path, manifest["base_model"]) if manifest.get("format") == "lora_asset" else Path(path)
    return family_named(manifest.get("family"), read_model_index(root)["_class_name"])


def load_trained_pipeline(path: str | Path, device: str = "auto", dtype: str = "float32") -> DiffusionPipeline:
    """An exported pipeline, or a LoRA asset put onto its base model (which is loaded offline, with the
    released code's sampler as the export has)."""
    manifest = read_manifest(path)  # a clear error when this is not a trained output
    check_export_files(path)
    asset = manifest.get("format") == "lora_asset"
    root = asset_base(path, manifest["base_model"]) if asset else Path(path)
    put_asset = (lambda pipe: load_lora_asset(pipe, Path(path), manifest["tokens"])) if asset else None
    return pipeline_from(root, export_family(path), dtype, str(path), put_asset).to(resolve_device(device))


def pipeline_from(root: Path, family: type[ModelFamily], dtype: str, source: str,
                  put_assets: Callable[[DiffusionPipeline], None] | None = None) -> DiffusionPipeline:
    """The pipeline folder `root` loaded offline; `put_assets` (LoRA assets onto a base model) then runs on it
    under the released code's sampler, as an export has. `source`: what the user named, for the message."""
    import_own_model_modules(root)  # refuses a folder that names any other module, before diffusers reads it
    index = read_model_index(root)
    absent = {part: None for part in family.optional_parts if index.get(part) == [None, None]}
    try:
        with quiet_loading():  # its own traceback log and loading bar would come before our one line
            pipe = DiffusionPipeline.from_pretrained(root, dtype=getattr(torch, dtype), local_files_only=True,
                                                     **absent)
            if put_assets is not None:
                pipe.scheduler = family.inference_scheduler_for(pipe.scheduler.config)
                put_assets(pipe)
    except Exception as err:  # truncated weights, a damaged config, ...: the files, not us
        raise UserInputError(
            f"the trained pipeline in '{source}' cannot be loaded ({type(err).__name__}: {err}); its files are "
            f"incomplete or damaged. Export it again (resume its training run with ckpt_path=...), or point "
            f"pipeline= at an intact export."
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipeline: str,
    output_dir: str,
    prompts: list[str] | None = None,
    num_images_per_prompt: int = 2,
    seed: int = 0,
    batch_size: int = 4,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    save_attention: bool = True,
    wandb_table: bool = False,
    device: str = "auto",
    dtype: str = "float32",
    progress: bool = True,
    tf32: bool = True,
    compose: list[str] | None = None,
    compose_mode: str = "lora",
    compose_weights: list[float] | None = None,
) -> list[dict]:
    """Generate `num_images_per_prompt` images per prompt (seeds seed, seed+1, ...) into `output_dir`;
    `guidance_scale` None: the model family's default. `compose`: more LoRA assets put on the pipeline's base
    model beside it (`composition`; their tokens renamed `<j:name>`)."""
    from break_a_scene.composition import check_composable, composed_tokens, load_composed_pipeline

    manifest = read_manifest(pipeline)
    assets = [str(pipeline), *map(str, compose)] if compose else None
    if assets:
        check_composable(assets, compose_mode, compose_weights)
    tokens = [t for names in composed_tokens(assets) for t in names] if assets else manifest["tokens"]
    prompts = list(prompts) if prompts else default_prompts(tokens)
    check_prompts(prompts, tokens)
    if num_images_per_prompt < 1 or batch_size < 1:
        raise UserInputError("num_images_per_prompt and batch_size must be at least 1.")
    set_tf32(tf32)
    pipe = load_composed_pipeline(assets, compose_mode, compose_weights, device, dtype) if assets else \
        load_trained_pipeline(pipeline, device, dtype)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(p, seed + i) for p in prompts for i in range(num_images_per_prompt)]
    records = []
    family = export_family(pipeline)
    guidance = family.default_guidance_scale if guidance_scale is None else guidance_scale
    samples = sample_images(
        pipe, [p for p, _ in jobs], [s for _, s in jobs], manifest["resolution"], num_inference_steps, guidance,
        batch_size, tokens if save_attention else None, manifest.get("attention_resolution_divisor", 4), progress,
        family=family,
    )
    with open(out / "samples.jsonl", "w") as index:
        for number, sample in enumerate(samples):
            stem = f"{number:04d}"
            sample.image.save(out / f"{stem}.png")
            record = {"image": f"{stem}.png", "prompt": sample.prompt, "seed": sample.seed,
                      "guidance_scale": guidance, "attention": {}}
            if sample.attention:
                np.savez_compressed(out / f"{stem}_attn.npz", **{token_slug(t): m for t, m in sample.attention.items()})
                for token, grid in sample.attention.items():
                    name = f"{stem}_attn_{token_slug(token)}.png"
                    heatmap_overlay(sample.image, grid).save(out / name)
                    record["attention"][token] = name
            index.write(json.dumps(record) + "\n")
            records.append(record)
    for record in records:  # after the progress bar, so the two do not interleave
        log.info("%s: %r, seed %d", record["image"], record["prompt"], record["seed"])
    write_contact_sheet(records, out / "index.html", title=f"{pipeline}")
    if wandb_table:
        _log_wandb_table(records, out, pipeline)
    return records


def _log_wandb_table(records: list[dict], out: Path, pipeline: str) -> None:
    """A W&B run (online, offline or disabled as WANDB_MODE says) holding the samples table."""
    import wandb

    run = wandb.init(project="break-a-scene", job_type="generate", dir=str(out), config={"pipeline": pipeline})
    run.log({"samples": wandb_table(records, out)})
    run.finish()
