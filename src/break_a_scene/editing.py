"""Local editing by example: put learned concepts into a region of an existing image (Blended Latent
Diffusion, Avrahami et al. 2023, the use the released README shows for extracted assets).

The sample starts from noise and, after every denoising step, its latents outside the mask are replaced by
the original image's latents noised to the level of the next step (the original itself after the last), so
the prompt is drawn only inside the mask and blends into a background that denoises towards the original.
The mask goes to latent size by max-pooling: a latent cell with any edited pixel is edited. With
`paste_outside`, the original pixels are put back outside the mask at the end (the decoder changes them a
little); `edit.json` records how far they had moved, over all pixels outside the mask and over those away
from its latent cells (which the blend returns to the original's latents: with an exact VAE, unchanged).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.export import read_manifest
from break_a_scene.families.base import ModelFamily
from break_a_scene.figures import heatmap_overlay, masks_overlay
from break_a_scene.generate import check_prompts, export_family, load_trained_pipeline
from break_a_scene.precision import set_tf32
from break_a_scene.sampling import sample_images
from break_a_scene.scene import SceneKeys, image_to_tensor, load_scene, prepare_scene
from break_a_scene.tokens import token_slug

log = logging.getLogger(__name__)
EDIT_KEYS = SceneKeys(image="image", masks="mask", mask_channel="edit.mask_channel",
                      whole_image="To draw a whole new image, use bas-generate.")


def load_image_and_mask(image: str | Path, mask: str | Path, resolution: int,
                        mask_channel: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(3, R, R) in [-1, 1] and the mask (R, R) in {0, 1}: read, checked, center-cropped and resized by the
    scene loader, as training reads a scene of one mask."""
    scene = load_scene(image=str(image), masks=[str(mask)], mask_channel=mask_channel, keys=EDIT_KEYS)
    scene = prepare_scene(scene, resolution)
    return scene.image, (scene.masks[0] > 0.5).float()


def latent_mask(mask: torch.Tensor, latent_size: int) -> torch.Tensor:
    """(R, R) pixel mask -> (1, 1, r, r): a latent cell is edited when any of its pixels is."""
    return F.adaptive_max_pool2d(mask[None, None], latent_size)


class LatentBlend:
    """`sample_images`' blend: outside the mask, the latents after step i become the original's latents noised
    to the level of step i + 1 (fresh noise from a generator per image seed), or the original after the last.
    The model family says how its sampler noises and how its pipeline lays the latents out (FLUX packs them)."""

    def __init__(self, original: torch.Tensor, mask: torch.Tensor, family: type[ModelFamily]):
        self.original, self.family = original, family  # (1, C, r, r) latents as the denoiser samples in
        self.mask = mask.expand_as(original)  # (1, C, r, r)
        self._generators: dict[int, torch.Generator] = {}

    def _noise(self, seed: int) -> torch.Tensor:
        generator = self._generators.setdefault(seed, torch.Generator().manual_seed(seed))
        return torch.randn(self.original.shape[1:], generator=generator)

    def __call__(self, pipe: DiffusionPipeline, step: int, latents: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        original = self.original.expand(len(seeds), -1, -1, -1)
        if step + 1 < len(pipe.scheduler.timesteps):
            noise = torch.stack([self._noise(seed) for seed in seeds])
            original = self.family.noised_to(pipe.scheduler, original, noise, step + 1)
        original = self.family.pipeline_layout(original).to(latents)
        mask = self.family.pipeline_layout(self.mask).to(latents)
        return mask * latents + (1 - mask) * original


def _to_image(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray(((pixels.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())


def edit(pipeline: str, image: str, mask: str, prompt: str, output_dir: str, num_images: int = 2, seed: int = 0,
         batch_size: int = 4, num_inference_steps: int = 50, guidance_scale: float = 7.5, paste_outside: bool = True,
         mask_channel: str = "auto", save_attention: bool = True, device: str = "auto", dtype: str = "float32",
         progress: bool = True, tf32: bool = True) -> list[dict]:
    """Edit the masked region of `image` to show `prompt` (which names learned tokens); `num_images` variants
    (seeds seed, seed+1, ...) written to `output_dir` with the mask overlay and each token's attention."""
    manifest = read_manifest(pipeline)
    tokens = manifest["tokens"]
    check_prompts([prompt], tokens)
    if num_images < 1 or batch_size < 1:
        raise UserInputError("edit.num_images and edit.batch_size must be at least 1.")
    resolution = manifest["resolution"]
    pixels, pixel_mask = load_image_and_mask(image, mask, resolution, mask_channel)
    set_tf32(tf32)
    family = export_family(pipeline)
    pipe = load_trained_pipeline(pipeline, device, dtype)
    original = family.image_latents(pipe, pixels).cpu()
    blend = LatentBlend(original, latent_mask(pixel_mask, original.shape[-1]), family)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = _to_image(pixels)
    source.save(out / "original.png")
    masks_overlay(source, pixel_mask[None].numpy(), ["edit"]).save(out / "mask_overlay.png")
    present = [t for t in tokens if t in prompt]
    seeds = [seed + i for i in range(num_images)]
    samples = sample_images(pipe, [prompt] * num_images, seeds, resolution, num_inference_steps, guidance_scale,
                            batch_size, present if save_attention else None,
                            manifest.get("attention_resolution_divisor", 4), progress, blend=blend,
                            family=family)
    outside = (pixel_mask == 0)[None]
    # the pixels of latent cells that hold no edited pixel: the blend returns them to the original's latents
    kept = F.interpolate(blend.mask[:, :1], size=pixel_mask.shape, mode="nearest")[0] == 0
    records = []
    for number, sample in enumerate(samples):
        edited = image_to_tensor(sample.image, resolution)
        change = (edited - pixels).abs() * 127.5  # in 0-255 steps
        if paste_outside:
            edited = torch.where(outside, pixels, edited)
        stem = f"{number:04d}"
        _to_image(edited).save(out / f"{stem}.png")
        record = {"image": f"{stem}.png", "prompt": prompt, "seed": sample.seed,
                  "outside_max_change": _max_over(change, outside), "kept_max_change": _max_over(change, kept),
                  "attention": {}}
        for token, grid in sample.attention.items():
            name = f"{stem}_attn_{token_slug(token)}.png"
            heatmap_overlay(sample.image, grid).save(out / name)
            record["attention"][token] = name
        records.append(record)
    settings = {"pipeline": str(pipeline), "image": str(image), "mask": str(mask), "prompt": prompt,
                "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "paste_outside": paste_outside, "resolution": resolution}
    (out / "edit.json").write_text(json.dumps({**settings, "images": records}, indent=1))
    for record in records:
        log.info("%s: seed %d; before any paste, pixels outside the mask moved by at most %.1f of 255 (%.1f away "
                 "from its latent cells)%s", record["image"], record["seed"], record["outside_max_change"],
                 record["kept_max_change"], "; the original was pasted back there" if paste_outside else "")
    return records


def _max_over(change: torch.Tensor, where: torch.Tensor) -> float:
    """The largest change (3, R, R) over the pixels where `where` (1, R, R) holds; 0 where it holds nowhere."""
    return round(float(change[where.expand_as(change)].max()), 2) if where.any() else 0.0
