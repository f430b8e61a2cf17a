"""The SDXL family: conditioning equal to the pipeline's, loss layers of the real architecture, a tiny SDXL
trained through both phases with prior preservation, exported, reloaded and sampled with attention maps."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from hydra.utils import instantiate
from omegaconf import OmegaConf

from break_a_scene.errors import UserInputError
from break_a_scene.families.sdxl import StableDiffusionXL, unet_config
from break_a_scene.families.stable_diffusion import StableDiffusion, loss_layer_names
from break_a_scene.sampling import sample_images
from break_a_scene.training import train
from tests.conftest import CONF
from tests.helpers import FAST, compose_config


def tiny_sdxl() -> StableDiffusionXL:
    return instantiate(OmegaConf.load(CONF / "model" / "tiny_sdxl.yaml").components)


def test_conditioning_equals_the_pipelines():
    """What training feeds the UNet is what StableDiffusionXLPipeline feeds it for the same prompt."""
    parts = tiny_sdxl()
    parts.add_placeholder_tokens(["<asset0>"], ["cat"])
    prompt = "a photo of <asset0> at the beach"
    hidden, extra = parts.encode_prompt(parts.tokenize([prompt]), 64)
    pipe = parts.pipeline()
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert hidden.shape == (1, 77, 64) and torch.allclose(hidden, embeds, atol=1e-6)
    assert torch.allclose(extra["added_cond_kwargs"]["text_embeds"], pooled, atol=1e-6)
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), torch.float32, text_encoder_projection_dim=32)
    assert torch.equal(extra["added_cond_kwargs"]["time_ids"], time_ids)


@pytest.mark.parametrize("resolution, side", [(1024, 32), (768, 24)])
def test_loss_layers_of_the_real_sdxl_unet(resolution, side):
    """Built on the meta device from model=sdxl_arch: at latent/4 the attention loss reads the 10-block
    transformers of the lowest level, 2 in the down path and 3 in the up path (50 layers)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "sdxl_arch.yaml").components)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(cfg["unet"], cfg["text_encoder"], cfg["text_encoder_2"]))
    assert unet.config.cross_attention_dim == 2048 and unet.add_embedding.linear_1.in_features == 2816
    latent = resolution // 8
    names = loss_layer_names(unet, latent, latent // 4)
    assert len(names) == 50 and len(set(names)) == 50
    assert sum(n.startswith("down_blocks.2.attentions.") for n in names) == 20
    assert sum(n.startswith("up_blocks.0.attentions.") for n in names) == 30
    assert all(".attn2." in n for n in names) and side == latent // 4
    assert len(loss_layer_names(unet, latent, latent // 2)) == 2 * 2 + 3 * 2  # the 2-block level


def test_each_family_loads_its_own_folders(tmp_path):
    parts = tiny_sdxl()
    parts.save_pipeline(tmp_path / "sdxl")
    loaded = StableDiffusionXL.load(str(tmp_path / "sdxl"))
    assert isinstance(loaded, StableDiffusionXL)
    assert torch.equal(loaded.text_encoder_2.text_projection.weight, parts.text_encoder_2.text_projection.weight)
    for path in (tmp_path / "sdxl" / "text_encoder_2").iterdir():
        path.unlink()
    (tmp_path / "sdxl" / "text_encoder_2").rmdir()
    with pytest.raises(UserInputError, match="holds a StableDiffusionXLPipeline, but this model config loads a "
                                             "StableDiffusionPipeline"):
        StableDiffusion.load(str(tmp_path / "sdxl"))
    with pytest.raises(UserInputError, match="StableDiffusionXLPipeline directory: it lacks text_encoder_2/"):
        StableDiffusionXL.load(str(tmp_path / "sdxl"))


@pytest.mark.slow  # the default suite trains tiny SDXL through both phases in test_lora.py
def test_tiny_sdxl_trains_both_phases_exports_and_generates(tmp_path, scene_dir):
    overrides = [*FAST, "model=tiny_sdxl", f"data.scene.folder={scene_dir}", "data.initializer_words=[red,blue]",
                 "data.prior_preservation.enabled=true", "data.prior_preservation.num_class_images=2",
                 "data.prior_preservation.num_inference_steps=2", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config("train", overrides, tmp_path)
    start = tiny_sdxl()
    module = train(cfg)
    assert module.phase == 2 and module.trainer.global_step == 6
    for name, encoder in start.named_text_encoders():  # the tokens learned in both encoders
        rows = encoder.get_input_embeddings().weight
        red, blue = start.tokenizers[0].encode("red blue", add_special_tokens=False)
        learned = getattr(module, name).get_input_embeddings().weight
        assert learned.shape[0] == 49410 and not torch.equal(learned[49408], rows[red])
        assert not torch.equal(learned[49409], rows[blue])
    assert not torch.equal(module.unet.conv_in.weight, start.unet.conv_in.weight)  # phase 2 trained the UNet

    pipeline_dir = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline_dir / "break_a_scene.json").read_text())["tokens"] == ["<asset0>", "<asset1>"]
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.tokenizer("<asset1>").input_ids == pipe.tokenizer_2("<asset1>").input_ids == [49406, 49409, 49407]
    trained = module.text_encoder_2.get_input_embeddings().weight
    assert torch.equal(pipe.text_encoder_2.get_input_embeddings().weight[49408:], trained[49408:])
    samples = list(sample_images(pipe, ["a photo of <asset0> and <asset1>"], [0], 64, 2, 5.0, 1,
                                 ["<asset0>", "<asset1>"], 4, progress=False, family=StableDiffusionXL))
    assert samples[0].image.size == (64, 64)
    assert {token: m.shape for token, m in samples[0].attention.items()} == {"<asset0>": (8, 8), "<asset1>": (8, 8)}
