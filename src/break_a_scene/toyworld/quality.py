"""How well a toy-world text-to-image model follows prompts, scored by the judge.

Single-object prompts ("a photo of a blue ring on the left on a teal background") score colour, shape,
colour+shape (an object with both), position (that object in the prompted slot) and background;
two-object prompts score all-correct (both objects in their slots and the background).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.judges import ToyJudge, read_images
from break_a_scene.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, SLOTS, ToyObject, ToyScene, caption, render


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    scene: ToyScene  # what the prompt asks for


def prompt_cases(count: int, objects: int, seed: int = 0) -> list[PromptCase]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        slots = sorted(rng.sample(SLOTS, objects), key=SLOTS.index)
        pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], objects)
        scene = ToyScene(tuple(ToyObject(s, c, slot) for (c, s), slot in zip(pairs, slots)),
                         rng.choice(list(BACKGROUNDS)))
        cases.append(PromptCase(caption(scene), scene))
    return cases


def score(case: PromptCase, reading) -> dict[str, float]:
    present = [obj for obj in reading.slots.values() if obj is not None]
    scene = case.scene
    background = float(reading.background == scene.background)
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        found = reading.find(obj.colour, obj.shape)
        return {
            "colour": float(any(c == obj.colour for c, _ in present)),
            "shape": float(any(s == obj.shape for _, s in present)),
            "colour+shape": float(bool(found)),
            "position": float(obj.slot in found),
            "background": background,
        }
    placed = all(reading.slots[obj.slot] == (obj.colour, obj.shape) for obj in scene.objects)
    return {"objects": float(placed), "all_correct": float(placed and background == 1.0)}


def high_frequency_share(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Per image, the share of its spectral energy (mean removed, per channel) at frequencies of `cutoff` cycles
    per pixel or more along either axis. The pixel-shuffle VAE's checkerboard residue (period 2 pixels, 0.5
    cycles per pixel) sits entirely there; a flat background has none. images: (B, C, H, W) -> (B,); a constant
    image scores 0."""
    centred = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs().pow(2).sum(dim=1)  # (B, H, W), summed over channels
    fy = torch.fft.fftfreq(images.shape[-2]).abs().view(-1, 1)
    fx = torch.fft.fftfreq(images.shape[-1]).abs().view(1, -1)
    high = (fy >= cutoff) | (fx >= cutoff)
    total = power.sum(dim=(-2, -1))
    return torch.where(total > 0, (power * high).sum(dim=(-2, -1)) / total.clamp_min(1e-12), torch.zeros_like(total))


@torch.no_grad()
def measure(pipe, judge: ToyJudge, cases: list[PromptCase], guidance_scale: float, steps: int = 25,
            seed: int = 0, batch_size: int = 32, resolution: int = 32, family=None) -> list[dict]:
    """One row per case: the prompt, its scores, and the high-frequency share of the sample and of the true
    render of what it asks for (the checkerboard residue shows as the difference); seeds seed, seed+1, ...
    `family`: the pipeline's model family (the toy MM-DiT's pipeline needs its call arguments)."""
    from break_a_scene.sampling import sample_images

    prompts = [c.prompt for c in cases]
    samples = list(sample_images(pipe, prompts, [seed + i for i in range(len(cases))], resolution, steps,
                                 guidance_scale, batch_size, progress=False, family=family))
    images = torch.stack([image_to_tensor(s.image, resolution) for s in samples])
    renders = torch.stack([image_to_tensor(render(case.scene, resolution)[0], resolution) for case in cases])
    readings = read_images(judge, images)
    sampled, rendered = high_frequency_share(images).tolist(), high_frequency_share(renders).tolist()
    return [
        {"prompt": case.prompt, **score(case, reading), "high_frequency": hf, "high_frequency_render": hf_render}
        for case, reading, hf, hf_render in zip(cases, readings, sampled, rendered)
    ]
