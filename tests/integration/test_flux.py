"""The FLUX.1 family: conditioning and packing equal to FluxPipeline's, the resolution-shifted rectified-flow
inputs, joint-attention maps with rotary positions checked by hand, placeholder tokens in CLIP and T5 (T5's own
ids), and the tiny FLUX trained through both phases, exported, reloaded with FluxPipeline and sampled with maps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxAttention
from hydra.utils import instantiate
from omegaconf import OmegaConf

from break_a_scene.attention import text_attention
from break_a_scene.families.flux import Flux, image_ids, pack, resolution_shift, unpack
from break_a_scene.generate import generate
from break_a_scene.training import train
from tests.conftest import CONF
from tests.helpers import FAST, compose_config


def tiny_flux() -> Flux:
    return instantiate(OmegaConf.load(CONF / "model" / "tiny_flux.yaml").components)


def test_conditioning_equals_the_pipelines():
    parts = tiny_flux()
    tokens = parts.add_placeholder_tokens(["<asset0>"], ["cat"])
    assert tokens.encoder_ids == [[49408], [2234]]  # CLIP's next id; T5's after its 2,234 tokens, in its spare rows
    assert parts.text_encoder_2.get_input_embeddings().weight.shape[0] == 2234 + 28  # not shrunk to the tokenizer
    prompt = "a photo of <asset0> at the beach"
    hidden, extra = parts.encode_prompt(parts.tokenize([prompt]), 64)
    embeds, pooled, text_ids = parts.pipeline().encode_prompt(prompt, None, device="cpu", max_sequence_length=512)
    assert hidden.shape == (1, 512, 32) and torch.allclose(hidden, embeds, atol=1e-6)
    assert torch.allclose(extra["pooled_projections"], pooled, atol=1e-6) and not text_ids.any()


def test_packing_and_positions_equal_the_pipelines():
    latents = torch.randn(2, 16, 6, 4)
    packed = pack(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 16, 6, 4))
    assert torch.equal(unpack(packed, 6, 4), latents)
    assert torch.equal(image_ids(3, 2), FluxPipeline._prepare_latent_image_ids(1, 3, 2, "cpu", torch.float32))


def test_training_inputs_are_shifted_rectified_flow():
    """u ~ logit-normal, shifted as FLUX.1-dev's sampler shifts an image of this many tokens: mu is linear in
    the token count (0.5 at 256 tokens, 1.15 at 4096), sigma = e^mu / (e^mu + 1/u - 1)."""
    parts = tiny_flux()
    latents = torch.randn(3, 16, 32, 32)  # 16 x 16 = 256 packed tokens: mu = base_shift = 0.5
    noisy, timesteps, target = parts.training_inputs(latents, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=generator)
    u = torch.randn(3, generator=generator).sigmoid()
    sigma = math.exp(0.5) / (math.exp(0.5) + 1 / u - 1)
    assert resolution_shift(parts.noise_scheduler.config, 256) == pytest.approx(0.5)
    assert torch.allclose(timesteps, sigma * 1000, atol=1e-4)
    s = sigma[:, None, None, None]
    assert torch.allclose(noisy, (1 - s) * latents + s * noise, atol=1e-6) and torch.equal(target, noise - latents)


def test_joint_attention_maps_with_rotary_positions_by_hand():
    """One head of width 2, identity projections. FLUX normalises queries and keys per head (RMS norm: (1, 0)
    becomes (sqrt 2, 0)) and rotates them by position: the image query is turned by 90 degrees
    (cos 0, sin 1), the text keys by 0. So the query (1, 0) meets the keys as (0, sqrt 2): logits
    q.k / sqrt 2 = (0, sqrt 2, 0) against the keys (1, 0), (0, 1), (0, 0), softmax over those three only."""
    attn = FluxAttention(query_dim=2, heads=1, dim_head=2, added_kv_proj_dim=2, bias=False, added_proj_bias=False)
    with torch.no_grad():
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            getattr(attn, name).weight.copy_(torch.eye(2))
    image = torch.tensor([[[1.0, 0.0]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    cos = torch.tensor([[1.0, 1.0]] * 3 + [[0.0, 0.0]])  # text rows first, then the image row
    sin = torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 1.0]])
    maps = text_attention(attn, image, text, (cos, sin))
    e = math.exp(math.sqrt(2))
    assert maps.shape == (1, 1, 1, 3)
    assert torch.allclose(maps.flatten(), torch.tensor([1 / (e + 2), e / (e + 2), 1 / (e + 2)]), atol=1e-5)


def test_tiny_flux_trains_both_phases_exports_and_generates(tmp_path, scene_dir):
    overrides = [*FAST, "model=tiny_flux", f"data.scene.folder={scene_dir}", "data.initializer_words=[red,blue]"]
    start = tiny_flux()
    module = train(compose_config("train", overrides, tmp_path))
    assert module.phase == 2 and module.trainer.global_step == 6
    assert module.trainer.callback_metrics["loss_attention"] > 0  # the loss read the joint attention
    assert module.tokens.encoder_ids == [[49408, 49409], [2234, 2235]]
    for index, (name, encoder) in enumerate(start.named_text_encoders()):  # learned in CLIP and in T5
        learned = getattr(module, name).get_input_embeddings().weight
        red, blue = start.tokenizers[index].encode("red blue", add_special_tokens=False)
        first, second = module.tokens.ids_in(index)
        assert not torch.equal(learned[first], encoder.get_input_embeddings().weight[red])
        assert not torch.equal(learned[second], encoder.get_input_embeddings().weight[blue])
    assert not torch.equal(module.transformer.x_embedder.weight, start.transformer.x_embedder.weight)

    pipeline_dir = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline_dir / "break_a_scene.json").read_text())["family"] == Flux.qualified_name()
    pipe = FluxPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    assert pipe.tokenizer("<asset1>").input_ids == [49406, 49409, 49407]
    assert pipe.tokenizer_2("<asset1>").input_ids == [2235, 1]
    records = generate(str(pipeline_dir), str(tmp_path / "samples"), ["a photo of <asset0> and <asset1>"],
                       num_images_per_prompt=1, num_inference_steps=2, device="cpu", progress=False)
    assert set(records[0]["attention"]) == {"<asset0>", "<asset1>"}
    assert records[0]["guidance_scale"] == 3.5  # FLUX.1-dev's guidance input, not SD's 7.5


def test_flux_configs_load_a_saved_flux_folder_through_the_real_path(tmp_path):
    """model=flux_dev / flux_schnell read a pipeline folder as FLUX.1's sits in the cache (the tiny one, saved);
    its T5 comes back without dropout whatever its config says."""
    saved = tiny_flux().save_pipeline(tmp_path / "flux")
    config = json.loads((saved / "text_encoder_2" / "config.json").read_text())
    (saved / "text_encoder_2" / "config.json").write_text(json.dumps({**config, "dropout_rate": 0.1}))
    for name in ("flux_dev", "flux_schnell"):
        cfg = compose_config("train", [f"model={name}", f"model.components.pretrained_model_name_or_path={saved}"],
                             tmp_path)
        loaded = instantiate(cfg.model.components)
        assert isinstance(loaded, Flux) and loaded.latent_shift == pytest.approx(0.1159)
        assert loaded.text_encoder_2.config.dropout_rate == 0.0
        assert torch.equal(loaded.transformer.x_embedder.weight, tiny_flux().transformer.x_embedder.weight)
