import pytest
import torch

from break_a_scene.errors import UserInputError
from break_a_scene.families.stable_diffusion import StableDiffusion
from tests.conftest import tiny_components


def test_missing_weights_message_says_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserInputError) as err:
        StableDiffusion.load("stabilityai/stable-diffusion-2-1-base")
    text = str(err.value)
    assert "'stabilityai/stable-diffusion-2-1-base' were not found" in text
    assert "hf download stabilityai/stable-diffusion-2-1-base" in text
    assert "model.components.pretrained_model_name_or_path" in text


def test_directory_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(UserInputError, match="lacks tokenizer, text_encoder, vae, scheduler/"):
        StableDiffusion.load(str(tmp_path))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_saved_tiny_pipeline_loads_like_sd(tmp_path, prediction_type):
    built = tiny_components(prediction_type=prediction_type)
    built.save_pipeline(tmp_path / "pipe")
    loaded = StableDiffusion.load(str(tmp_path / "pipe"))
    assert loaded.prediction_type == prediction_type
    assert loaded.latent_scale == 0.18215 and loaded.vae_scale_factor == 2
    assert len(loaded.tokenizer) == 49408 and loaded.tokenizer.model_max_length == 77
    for a, b in zip(built.unet.parameters(), loaded.unet.parameters()):
        assert torch.equal(a, b)
    assert loaded.noise_scheduler.config.beta_schedule == "scaled_linear"


def test_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    """A cached hub snapshot is found offline, by id, through the same loader."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-sd" / "snapshots" / ("0" * 40)
    tiny_components().save_pipeline(snapshot)
    (cache / "models--someone--tiny-sd" / "refs").mkdir()
    (cache / "models--someone--tiny-sd" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    loaded = StableDiffusion.load("someone/tiny-sd")
    assert loaded.source == "someone/tiny-sd" and len(loaded.tokenizer) == 49408


def test_resolution_checks(tiny):
    tiny.check_resolution(64)
    tiny.check_resolution(72)  # 2 (VAE) * 4 (UNet) = 8
    with pytest.raises(UserInputError, match=r"data.resolution=70 .* multiple of 8. Set data.resolution=64 or 72"):
        tiny.check_resolution(70)


def test_a_library_name_is_imported_only_by_its_full_path():
    from break_a_scene.models import OWN_MODEL_MODULES, module_path

    assert module_path("stable_diffusion") == "diffusers.pipelines.stable_diffusion"
    assert module_path("diffusers") == "diffusers" and module_path("transformers") == "transformers"
    assert module_path(OWN_MODEL_MODULES[0]) == OWN_MODEL_MODULES[0]
    for name in ("os", "stable_diffusion.evil", "bas_planted_payload", None, 3):
        assert module_path(name) is None
