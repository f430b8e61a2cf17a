"""Sampling from a family's diffusers pipeline, optionally with per-token attention maps averaged over the
denoising steps (the same layers the attention loss trains, as the family captures them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from tqdm.auto import tqdm

from break_a_scene.families.base import ModelFamily
from break_a_scene.losses import normalize_by_max


@dataclass
class Sample:
    prompt: str
    seed: int
    image: Image.Image
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # token -> (r, r), max-normalised


def sample_images(
    pipe: DiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    resolution: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 4,
    attention_tokens: list[str] | None = None,
    attention_resolution_divisor: int = 4,
    progress: bool = True,
    blend: Callable[[DiffusionPipeline, int, torch.Tensor, list[int]], torch.Tensor] | None = None,
    family: type[ModelFamily] | None = None,
):
    """Yield one `Sample` per (prompt, seed) pair, in order, in batches of `batch_size`.

    Each image has its own generator seeded with its seed, so an image does not depend on the batch it
    was drawn in. With `attention_tokens`, each sample carries the maps of the tokens its prompt contains.
    `blend(pipe, step_index, latents, seeds)` may replace the latents after each step (local editing).
    `family`: the pipeline's model family, which says how to call it and capture its attention (needed for the
    maps, and for a family whose pipeline needs more than the prompt, e.g. the toy MM-DiT).
    """
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    device = pipe.device
    capture = None
    if attention_tokens:
        if family is None:
            raise ValueError("attention maps need the pipeline's model family")
        latent = resolution // pipe.vae_scale_factor
        capture = family.pipeline_attention_capture(pipe, latent, latent // attention_resolution_divisor).install()
    try:
        bar = tqdm(total=len(prompts), desc="sampling", unit="img", disable=not progress)
        for start in range(0, len(prompts), batch_size):
            batch_prompts, batch_seeds = prompts[start : start + batch_size], seeds[start : start + batch_size]
            generators = [torch.Generator(device="cpu").manual_seed(s) for s in batch_seeds]
            totals: list[torch.Tensor] = []
            if capture is not None:
                positions = family.prompt_key_positions(pipe, batch_prompts, attention_tokens).to(device)
                conditional = family.conditional_rows(len(batch_prompts), guidance_scale)

            def after_step(_pipe, step, _t, callback_kwargs, seeds=batch_seeds):
                if capture is not None:
                    totals.append(capture.token_maps(positions, conditional).float().cpu())
                    capture.store.clear()
                if blend is not None:
                    callback_kwargs["latents"] = blend(_pipe, step, callback_kwargs["latents"], seeds)
                return callback_kwargs

            kwargs = {"callback_on_step_end": after_step} if capture is not None or blend is not None else {}
            with torch.no_grad():
                images = pipe(
                    batch_prompts,
                    height=resolution,
                    width=resolution,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    generator=generators,
                    **(family.call_kwargs() if family is not None else {}),
                    **kwargs,
                ).images
            mean_maps = torch.stack(totals).mean(dim=0) if totals else None  # (B, K, r, r)
            for row, (prompt, seed, image) in enumerate(zip(batch_prompts, batch_seeds, images)):
                maps = {}
                if mean_maps is not None:
                    normalized = normalize_by_max(mean_maps[row])
                    for k, token in enumerate(attention_tokens):
                        if bool((positions[row, k] >= 0).any()):
                            maps[token] = normalized[k].numpy()
                yield Sample(prompt, seed, image, maps)
                bar.update(1)
        bar.close()
    finally:
        if capture is not None:
            capture.remove()
