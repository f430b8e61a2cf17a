"""A LoRA phase 2 on the MM-DiTs (SD 3, FLUX.1): the asset holds each text encoder's token rows at its own ids
(T5's included) and LoRA weights for the transformer and the CLIP encoders in the file diffusers' loader reads;
put onto its base model it draws what the fused export draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from break_a_scene.generate import export_family, generate, load_trained_pipeline
from break_a_scene.lora import LORA_WEIGHTS, TOKEN_EMBEDDINGS
from break_a_scene.training import train
from tests.helpers import FAST, compose_config
from tests.integration.test_flux import tiny_flux
from tests.integration.test_sd3 import tiny_sd3

CASES = {  # model config, tiny parts, the text encoders with adapters, T5's attribute and width
    "sd3": ("sd35_medium", tiny_sd3, {"text_encoder", "text_encoder_2"}, "text_encoder_3", 96),
    "flux": ("flux_dev", tiny_flux, {"text_encoder"}, "text_encoder_2", 32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lora_asset_on_the_base_model_draws_what_the_fused_export_draws(case, scene_dir, tmp_path):
    config, tiny, adapted, t5, t5_width = CASES[case]
    base_model = tiny().save_pipeline(tmp_path / "base")
    overrides = [*FAST, f"model={config}", f"model.components.pretrained_model_name_or_path={base_model}",
                 "data.resolution=64", f"data.scene.folder={scene_dir}", "variant=lora",
                 "method.lora.text_encoders=true", "method.lora.lr=0.05"]  # adapters that move the picture
    images = {}
    for export in ("asset", "fused"):
        train(compose_config("train", [*overrides, f"callbacks.export.lora={export}"], tmp_path / export))
        folder = tmp_path / export / "run" / "pipeline"
        records = generate(str(folder), str(tmp_path / f"{export}_samples"), ["a photo of <asset0> and <asset1>"],
                           num_images_per_prompt=1, num_inference_steps=2, guidance_scale=3.5, device="cpu",
                           progress=False)
        images[export] = np.asarray(Image.open(tmp_path / f"{export}_samples" / records[0]["image"]), dtype=float)
        if export == "asset":
            rows = load_file(str(folder / TOKEN_EMBEDDINGS))
            assert rows[t5].shape == (2, t5_width)  # T5's rows, taken at T5's ids
            weights = load_file(str(folder / LORA_WEIGHTS))
            prefixes = {key.split(".")[0] for key in weights}
            assert prefixes == {"transformer", *adapted}  # no T5 adapters: diffusers' loader reads none
            pipe = load_trained_pipeline(folder, device="cpu")
            assert getattr(pipe, t5.replace("text_encoder", "tokenizer"))("<asset1>").input_ids == [2235, 1]
            pipe.unload_lora_weights()
            images["rows only"] = np.asarray(pipe(["a photo of <asset0> and <asset1>"], height=64, width=64,
                                                  num_inference_steps=2, guidance_scale=3.5,
                                                  generator=[torch.Generator().manual_seed(0)],
                                                  **export_family(folder).call_kwargs()).images[0], float)
    assert np.abs(images["asset"] - images["fused"]).max() <= 2  # merged vs. unmerged adapters: rounding only
    assert np.abs(images["rows only"] - images["fused"]).mean() > 5  # and the adapters are what makes it so


@pytest.mark.parametrize("form,bytes_per_weight", [pytest.param("int8", 1, marks=pytest.mark.slow), ("nf4", 0.5)])
def test_qlora_holds_the_frozen_linears_quantized_and_exports_the_asset(form, bytes_per_weight, scene_dir,
                                                                          tmp_path):
    """method.quantize_frozen: FLUX's transformer and text encoders train under adapters with their linear weights
    in 8 or 4 bits (bitsandbytes, on the CPU here); the asset goes onto the full-precision base and generates."""
    import bitsandbytes as bnb

    base_model = tiny_flux().save_pipeline(tmp_path / "base")
    overrides = [*FAST, "model=flux_dev", f"model.components.pretrained_model_name_or_path={base_model}",
                 "data.resolution=64", f"data.scene.folder={scene_dir}", "variant=lora",
                 f"method.quantize_frozen={form}", "callbacks.export.lora=asset"]
    module = train(compose_config("train", overrides, tmp_path / "run"))
    layer = (bnb.nn.Linear4bit if form == "nf4" else bnb.nn.Linear8bitLt)
    to_q = module.transformer.transformer_blocks[0].attn.to_q
    assert isinstance(to_q.base_layer, layer) and to_q.lora_A.default.weight.dtype == torch.float32
    weight = to_q.base_layer.weight
    assert weight.numel() * weight.element_size() == to_q.in_features * to_q.out_features * bytes_per_weight
    assert isinstance(module.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q, layer)  # T5 too
    folder = tmp_path / "run" / "run" / "pipeline"
    records = generate(str(folder), str(tmp_path / "samples"), ["a photo of <asset0>"], num_images_per_prompt=1,
                       num_inference_steps=2, guidance_scale=3.5, device="cpu", progress=False)
    assert len(records) == 1


def test_quantized_base_weights_refuse_a_fused_export_and_a_full_phase_two(scene_dir, tmp_path):
    base = [*FAST, "model=tiny_flux", f"data.scene.folder={scene_dir}", "method.quantize_frozen=nf4"]
    with pytest.raises(Exception, match=r"method.quantize_frozen=nf4 holds the base weights quantized, and a "
                                        r"fused export would save them so; set callbacks.export.lora=asset"):
        train(compose_config("train", [*base, "variant=lora", "callbacks.export.lora=fused"], tmp_path / "a"))
    with pytest.raises(Exception, match=r"this run trains the whole denoiser and text encoders "
                                        r"\(phase2_trainable=all\); use variant=lora"):
        train(compose_config("train", [*base, "callbacks.export=null"], tmp_path / "b"))
