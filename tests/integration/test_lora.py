"""LoRA phase 2: only the adapters and the token rows train, the asset loads onto the untouched base model
with diffusers' own loaders and gives the fused export's images, for SD and SDXL."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from break_a_scene.errors import UserInputError
from break_a_scene.families.stable_diffusion import released_sampler
from break_a_scene.generate import generate, load_trained_pipeline
from break_a_scene.training import build_run, train
from tests.conftest import CONF
from tests.helpers import FAST, compose_config

LORA = ["method.phase2_trainable=lora", "method.lora.rank=4", "method.lora.alpha=8", "method.lora.lr=1e-2"]


def _saved_base(tmp_path, model: str):
    parts = instantiate(OmegaConf.load(CONF / "model" / f"{model}.yaml").components)
    return parts.save_pipeline(tmp_path / "base")


def _images(pipe, prompt: str) -> np.ndarray:
    return pipe(prompt, height=64, width=64, num_inference_steps=3, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(0), output_type="np").images


# SDXL (two encoders) in the default suite; SD's one encoder is the simpler case (make test-slow)
@pytest.mark.parametrize("model", [pytest.param("tiny", marks=pytest.mark.slow), "tiny_sdxl"])
def test_lora_asset_on_the_base_model_equals_the_fused_export(tmp_path, scene_dir, model):
    base_dir = _saved_base(tmp_path, model)
    family = {"tiny": "sd21_base", "tiny_sdxl": "sdxl"}[model]  # the model config of the saved folder's family
    overrides = [*FAST, f"model={family}", f"model.components.pretrained_model_name_or_path={base_dir}",
                 "model.resolution=64", f"data.scene.folder={scene_dir}", *LORA, "callbacks.export.lora=both"]
    module = train(compose_config("train", overrides, tmp_path))

    # phase 2 trained the adapters; every base weight of the UNet is still the loaded one, bit for bit
    base = DiffusionPipeline.from_pretrained(base_dir, local_files_only=True)
    adapters = {n: p for n, p in module.unet.named_parameters() if ".lora_" in n}
    assert adapters and any(float(p.detach().abs().max()) > 0 for n, p in adapters.items() if "lora_B" in n)
    loaded = base.unet.state_dict()
    for name, tensor in module.unet.state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(tensor, loaded[name.replace(".base_layer.", ".")]), name

    export = tmp_path / "run" / "pipeline"
    manifest = json.loads((export / "break_a_scene.json").read_text())
    assert manifest["format"] == "pipeline" and manifest["base_model"] == str(base_dir)
    rows = load_file(export / "token_embeddings.safetensors")
    encoders = ["text_encoder"] + (["text_encoder_2"] if model == "tiny_sdxl" else [])
    assert sorted(rows) == encoders and all(r.shape == (2, 32) for r in rows.values())

    prompt = "a photo of <asset0> and <asset1>"
    fused = DiffusionPipeline.from_pretrained(export, local_files_only=True)
    base.scheduler = released_sampler(base.scheduler.config)  # the export's sampler
    for name in encoders:  # diffusers' own loaders, as a user of the asset calls them
        tokenizer = getattr(base, name.replace("text_encoder", "tokenizer"))
        base.load_textual_inversion(rows[name], token=["<asset0>", "<asset1>"], text_encoder=getattr(base, name),
                                    tokenizer=tokenizer)
    tokens_only = _images(base, prompt)
    base.load_lora_weights(export)
    from_asset = _images(base, prompt)
    assert np.abs(from_asset - _images(fused, prompt)).max() < 1e-4
    assert np.abs(from_asset - tokens_only).max() > 1e-3  # the adapters change the images


def test_asset_alone_generates_through_bas_generate(tmp_path, scene_dir):
    """The default export is the asset alone (a few kB here); generation loads the base model under it."""
    base_dir = _saved_base(tmp_path, "tiny")
    overrides = [*FAST, "model=sd21_base", f"model.components.pretrained_model_name_or_path={base_dir}",
                 "model.resolution=64", f"data.scene.folder={scene_dir}", *LORA, "method.lora.train_tokens=false"]
    module = train(compose_config("train", overrides, tmp_path))
    export = tmp_path / "run" / "pipeline"
    assert sorted(p.name for p in export.iterdir()) == [
        "break_a_scene.json", "pytorch_lora_weights.safetensors", "token_embeddings.safetensors"]
    assert sum(p.stat().st_size for p in export.iterdir()) < 200_000
    # with train_tokens=false phase 2 leaves the rows as phase 1 left them: the asset holds those
    assert torch.equal(load_file(export / "token_embeddings.safetensors")["text_encoder"],
                       module.token_rows[0].detach())
    records = generate(str(export), str(tmp_path / "samples"), num_images_per_prompt=1, num_inference_steps=2,
                       progress=False, device="cpu")
    assert len(records) == 3 and list(records[2]["attention"]) == ["<asset0>", "<asset1>"]


def test_asset_of_a_model_built_from_config_is_refused_before_any_work(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", *LORA], tmp_path)
    with pytest.raises(UserInputError, match="callbacks.export.lora=fused"):
        build_run(cfg)
    assert not (tmp_path / "run" / "pipeline").exists()


def test_unknown_export_format_is_refused_before_any_work(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", *LORA, "callbacks.export.lora=fuse"],
                         tmp_path)
    with pytest.raises(UserInputError, match="callbacks.export.lora='fuse'; use one of asset, fused, both"):
        build_run(cfg)


def test_asset_whose_base_model_is_gone_names_it(tmp_path):
    export = tmp_path / "asset"
    export.mkdir()
    for name in ("token_embeddings.safetensors", "pytorch_lora_weights.safetensors"):
        (export / name).write_bytes(b"")
    gone = tmp_path / "moved_away"
    (export / "break_a_scene.json").write_text(json.dumps(
        {"format": "lora_asset", "base_model": str(gone), "tokens": ["<asset0>"], "resolution": 64}))
    with pytest.raises(UserInputError, match=f"LoRA asset for the base model '{gone}'"):
        load_trained_pipeline(export)
