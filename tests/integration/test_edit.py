"""`bas-edit` on a toy-world pipeline (the shipped toy model, a few training steps on the shipped scene,
exported): the edited images, overlay and attention are written, and outside the mask the image stays the
original's (the toy VAE is exact, so away from the mask's latent cells nothing may move)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from break_a_scene.config import ASSETS_DIR
from break_a_scene.editing import LatentBlend, edit, latent_mask
from break_a_scene.errors import UserInputError
from break_a_scene.toyworld.world import ToyObject, ToyScene, render
from break_a_scene.training import train
from tests.helpers import compose_config
from tests.integration.test_cli import run

PROMPT = "a photo of a green square on the left and <asset0> in the middle on a navy background"


@pytest.fixture(scope="module")
def toy_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_edit")
    cfg = compose_config("train", [
        "experiment=toyworld", "method.phase1_steps=2", "method.phase2_steps=2", "logger=none",
        "callbacks.samples=null", "callbacks.attention_maps=null", "callbacks.scene=null",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"data.scene.folder={ASSETS_DIR / 'scenes' / 'toy_star_ring'}"], root)
    train(cfg)
    return root / "run" / "pipeline"


@pytest.fixture
def photo(tmp_path):
    """A green square on the left on navy, and the middle slot's column as the region to edit."""
    image, _ = render(ToyScene((ToyObject("square", "green", "left"),), "navy"), 32)
    image.save(tmp_path / "img.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:28, 11:22] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "img.png", tmp_path / "mask.png", mask > 0


def test_latent_mask_takes_every_cell_with_an_edited_pixel():
    pixels = torch.zeros(8, 8)
    pixels[1, 2] = 1  # one pixel in cell (0, 1)
    cells = latent_mask(pixels, 4)
    assert cells.shape == (1, 1, 4, 4) and cells.sum() == 1 and cells[0, 0, 0, 1] == 1


def test_blend_after_the_last_step_is_the_original_outside_the_mask(toy_pipeline):
    from break_a_scene.families.stable_diffusion import StableDiffusion
    from break_a_scene.generate import load_trained_pipeline

    pipe = load_trained_pipeline(toy_pipeline, "cpu")
    pipe.scheduler.set_timesteps(4)
    original, latents = torch.randn(1, 12, 16, 16), torch.randn(2, 12, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:8] = 1
    blend = LatentBlend(original, mask, StableDiffusion)
    last = blend(pipe, 3, latents, [0, 1])
    assert torch.equal(last[..., 4:8], latents[..., 4:8])
    assert torch.equal(last[..., :4], original.expand(2, -1, -1, -1)[..., :4])
    noised = blend(pipe, 0, latents, [0, 1])  # the original at the next step's noise level: not the original
    assert not torch.allclose(noised[..., :4], original.expand(2, -1, -1, -1)[..., :4])


def test_bas_edit_keeps_the_outside(tmp_path, toy_pipeline, photo):
    image, mask, inside = photo
    out = tmp_path / "edit"
    result = run("bas-edit", f"pipeline={toy_pipeline}", f"image={image}", f"mask={mask}", f"prompt='{PROMPT}'",
                 "edit.num_images=2", "edit.num_inference_steps=4", "edit.paste_outside=false", "edit.device=cpu",
                 f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "edit.json").read_text())
    assert [r["image"] for r in report["images"]] == ["0000.png", "0001.png"]
    for record in report["images"]:
        assert record["kept_max_change"] <= 0.5  # the exact toy VAE: only rounding to 8 bits
        assert record["attention"] == {"<asset0>": record["image"].replace(".png", "_attn_asset0.png")}
        assert (out / record["attention"]["<asset0>"]).is_file()
    for name in ("original.png", "mask_overlay.png"):
        assert (out / name).is_file()
    # with the paste (the default), every pixel outside the mask is the original's
    pasted = edit(str(toy_pipeline), str(image), str(mask), PROMPT, str(tmp_path / "pasted"), num_images=1,
                  num_inference_steps=4, device="cpu", progress=False)
    edited = np.asarray(Image.open(tmp_path / "pasted" / pasted[0]["image"]))
    original = np.asarray(Image.open(image).convert("RGB"))
    assert np.array_equal(edited[~inside], original[~inside])


def test_bad_input_is_refused_before_the_model_loads(tmp_path, toy_pipeline, photo):
    image, mask, _ = photo
    with pytest.raises(UserInputError, match="uses none of the learned tokens"):
        edit(str(toy_pipeline), str(image), str(mask), "a photo of a star", str(tmp_path / "a"))
    Image.new("L", (16, 16), 255).save(tmp_path / "small.png")
    with pytest.raises(UserInputError, match="mask '.*small.png' is 16x16 but image '.*' is 32x32"):
        edit(str(toy_pipeline), str(image), str(tmp_path / "small.png"), PROMPT, str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_flux_blends_in_its_packed_layout_at_its_own_noise_level():
    """FLUX's pipeline holds packed tokens between steps: the blend packs the original and the mask, and noises by
    rectified flow at the sampler's sigma, (1 - s) x + s n."""
    from types import SimpleNamespace

    from diffusers import FlowMatchEulerDiscreteScheduler

    from break_a_scene.families.flux import Flux, pack

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(scheduler=scheduler)
    original, latents = torch.randn(1, 16, 8, 8), torch.randn(2, 16, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, 4:] = 1  # the right half: whole 2x2 patches, so whole packed tokens
    blend = LatentBlend(original, mask, Flux)
    last = blend(pipe, 3, pack(latents), [0, 1])
    expected = pack(torch.where(mask.bool(), latents, original.expand(2, -1, -1, -1)))
    assert torch.equal(last, expected)
    noised = blend(pipe, 1, pack(latents), [0, 1])
    noise = torch.stack([torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)])
    sigma = scheduler.sigmas[2]
    outside = (1 - sigma) * original + sigma * noise
    assert torch.allclose(noised, pack(torch.where(mask.bool(), latents, outside)), atol=1e-6)
    assert 0 < float(sigma) < 1
