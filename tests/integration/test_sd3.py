"""The SD3 family (an MM-DiT): conditioning equal to the pipeline's, rectified-flow training inputs, the
attention loss's maps on joint attention checked by hand on a tiny block, and the tiny SD3 trained through both
phases, exported, reloaded with diffusers' own pipeline class and sampled with attention maps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0
from hydra.utils import instantiate
from omegaconf import OmegaConf

from break_a_scene.attention import JointAttentionCapture, text_attention
from break_a_scene.families.sd3 import StableDiffusion3
from break_a_scene.generate import generate
from break_a_scene.training import train
from tests.conftest import CONF
from tests.helpers import FAST, compose_config


def tiny_sd3() -> StableDiffusion3:
    return instantiate(OmegaConf.load(CONF / "model" / "tiny_sd3.yaml").components)


def test_conditioning_equals_the_pipelines():
    parts = tiny_sd3()
    parts.add_placeholder_tokens(["<asset0>"], ["cat"])
    prompt = "a photo of <asset0> at the beach"
    hidden, extra = parts.encode_prompt(parts.tokenize([prompt]), 64)
    embeds, _, pooled, _ = parts.pipeline().encode_prompt(prompt, None, None, device="cpu",
                                                          do_classifier_free_guidance=False)
    assert hidden.shape == (1, 77 + 256, 96) and torch.allclose(hidden, embeds, atol=1e-6)  # CLIP, then T5
    assert torch.allclose(extra["pooled_projections"], pooled, atol=1e-6)


def test_training_inputs_are_rectified_flow():
    parts = tiny_sd3()
    latents = torch.randn(3, 4, 8, 8)
    noisy, timesteps, target = parts.training_inputs(latents, torch.Generator().manual_seed(0))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))  # drawn first, as documented
    sigmas = (timesteps / 1000)[:, None, None, None]
    assert torch.allclose(noisy, (1 - sigmas) * latents + sigmas * noise, atol=1e-6)
    assert torch.equal(target, noise - latents)
    assert all(t in parts.noise_scheduler.timesteps for t in timesteps)  # the (shifted) training schedule's


def _joint_block() -> Attention:
    """One head of width 2, every projection the identity and no norms: the logits are plain dot products."""
    attn = Attention(query_dim=2, added_kv_proj_dim=2, dim_head=2, heads=1, out_dim=2, context_pre_only=False,
                     bias=False, processor=JointAttnProcessor2_0())
    with torch.no_grad():
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            getattr(attn, name).weight.copy_(torch.eye(2))
        attn.to_out[0].weight.copy_(torch.eye(2))
    return attn


def test_joint_attention_maps_by_hand():
    """Image queries (1, 0) and (0, 2) against text keys (1, 0), (0, 1), (0, 0): logits q.k / sqrt(2),
    softmax over the three text keys only (the image keys do not take a share, as in a UNet's
    cross-attention)."""
    attn = _joint_block()
    image = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    maps = text_attention(attn, image, text)
    a, b = math.exp(1 / math.sqrt(2)), math.exp(2 / math.sqrt(2))
    expected = torch.tensor([[[a / (a + 2), 1 / (a + 2), 1 / (a + 2)], [1 / (b + 2), b / (b + 2), 1 / (b + 2)]]])
    assert maps.shape == (1, 1, 2, 3) and torch.allclose(maps[:, 0], expected, atol=1e-6)


def test_the_probe_leaves_the_fused_attention_as_it_was():
    attn = _joint_block()
    image, text = torch.randn(2, 4, 2), torch.randn(2, 3, 2)
    before = attn(image, text)

    class Holder(torch.nn.Module):  # what a transformer offers a capture: named processors
        def __init__(self):
            super().__init__()
            self.block = attn

        @property
        def attn_processors(self):
            return {"block.processor": self.block.processor}

        def set_attn_processor(self, processors):
            self.block.set_processor(processors["block.processor"])

    capture = JointAttentionCapture(Holder(), ["block.processor"], side=2).install()
    after = attn(image, text)
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    positions = torch.tensor([[0, 2], [1, 1]])  # each sample's token columns
    probs = text_attention(attn, image, text)[:, 0]  # (B, 4 image tokens, 3 text tokens)
    expected = torch.stack([probs[b][:, positions[b]].T for b in range(2)]).reshape(2, 2, 2, 2)
    assert torch.allclose(capture.token_maps(positions), expected, atol=1e-6)
    capture.remove()
    assert isinstance(attn.processor, JointAttnProcessor2_0)


def test_tiny_sd3_trains_both_phases_exports_and_generates(tmp_path, scene_dir):
    overrides = [*FAST, "model=tiny_sd3", f"data.scene.folder={scene_dir}", "data.initializer_words=[red,blue]"]
    start = tiny_sd3()
    module = train(compose_config("train", overrides, tmp_path))
    assert module.phase == 2 and module.trainer.global_step == 6
    assert module.denoiser is module.transformer  # registered under the pipeline's name for it
    assert module.tokens.encoder_ids == [[49408, 49409], [49408, 49409], [2234, 2235]]  # T5's own ids
    for index, (name, encoder) in enumerate(start.named_text_encoders()):  # learned in CLIP-L, CLIP-G and T5
        learned = getattr(module, name).get_input_embeddings().weight
        red, blue = start.tokenizers[index].encode("red blue", add_special_tokens=False)
        first, second = module.tokens.ids_in(index)
        assert not torch.equal(learned[first], encoder.get_input_embeddings().weight[red])
        assert not torch.equal(learned[second], encoder.get_input_embeddings().weight[blue])
    assert not torch.equal(module.transformer.pos_embed.proj.weight, start.transformer.pos_embed.proj.weight)

    pipeline_dir = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline_dir / "break_a_scene.json").read_text())["family"] == StableDiffusion3.qualified_name()
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir, local_files_only=True)
    assert pipe.tokenizer("<asset1>").input_ids == pipe.tokenizer_2("<asset1>").input_ids == [49406, 49409, 49407]
    assert pipe.tokenizer_3("<asset1>").input_ids == [2235, 1]
    records = generate(str(pipeline_dir), str(tmp_path / "samples"), ["a photo of <asset0> and <asset1>"],
                       num_images_per_prompt=1, num_inference_steps=2, device="cpu", progress=False)
    assert set(records[0]["attention"]) == {"<asset0>", "<asset1>"}


def test_the_released_capture_has_no_mm_dit_counterpart(scene_dir, tmp_path):
    cfg = compose_config("train", [*FAST, "model=tiny_sd3", f"data.scene.folder={scene_dir}",
                                   "method.attention_capture=released"], tmp_path)
    with pytest.raises(Exception, match="an MM-DiT has no such layers"):
        train(cfg)


def test_sd35_configs_load_a_saved_sd3_folder_through_the_real_path(tmp_path):
    """model=sd35_medium reads a pipeline folder as SD 3.5's sits in the cache (here the tiny one, saved)."""
    saved = tiny_sd3().save_pipeline(tmp_path / "sd35")
    for name in ("sd35_medium", "sd35_large"):
        cfg = compose_config("train", [f"model={name}", f"model.components.pretrained_model_name_or_path={saved}"],
                             tmp_path)
        loaded = instantiate(cfg.model.components)
        assert isinstance(loaded, StableDiffusion3) and loaded.latent_shift == pytest.approx(0.0609)
        assert torch.equal(loaded.transformer.pos_embed.proj.weight, tiny_sd3().transformer.pos_embed.proj.weight)
        assert loaded.text_encoder_3 is not None and len(loaded.tokenizers) == 3
    cfg = compose_config("train", ["model=sd35_medium", f"model.components.pretrained_model_name_or_path={saved}",
                                   "model.components.text_encoder_3=false"], tmp_path)
    without = instantiate(cfg.model.components)  # T5 left unloaded: the prompt ends in 256 zero rows
    assert without.text_encoder_3 is None and [n for n, _ in without.named_text_encoders()] == ["text_encoder",
                                                                                                "text_encoder_2"]
    hidden, _ = without.encode_prompt(without.tokenize(["a photo"]), 64)
    assert hidden.shape == (1, 77 + 256, 96) and not hidden[:, 77:].any()


def test_a_loading_option_the_family_lacks_is_refused_in_one_line(tmp_path):
    from break_a_scene.errors import UserInputError
    from break_a_scene.families.stable_diffusion import StableDiffusion

    with pytest.raises(UserInputError, match=r"^model.components.text_encoder_3 is not a setting of "
                                             r"StableDiffusion.load; it takes pretrained_model_name_or_path, "
                                             r"revision, variant\.$"):
        StableDiffusion.load(str(tmp_path), text_encoder_3=False)


def test_attention_switches_pick_blocks_and_keys(scene_dir, tmp_path):
    """method.attention_layers=[1] reads the second joint block alone; attention_keys=first reads a token's CLIP
    key only, so the loss differs from the default's, which also counts its T5 key."""
    losses = {}
    for keys in ("all", "first"):
        overrides = [*FAST, "model=tiny_sd3", f"data.scene.folder={scene_dir}", "method.attention_layers=[1]",
                     f"method.attention_keys={keys}", "method.phase2_steps=0", "method.phase1_steps=1",
                     "callbacks.export=null"]
        module = train(compose_config("train", overrides, tmp_path / keys))
        assert module.capture.loss_layers == ["transformer_blocks.1.attn.processor"]
        losses[keys] = float(module.trainer.callback_metrics["loss_attention"])
    assert losses["all"] != pytest.approx(losses["first"])
