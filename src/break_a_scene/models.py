"""The model-family seam, its Stable Diffusion 1.x / 2.x family, and loading parts offline or building them.

Every model the framework trains is a `DiffusionComponents`: it owns its tokenizers and text encoders, turns
prompt ids into the UNet's conditioning (`encode_prompt`), adds placeholder tokens to every text encoder,
builds the inference pipeline and saves it. Training, sampling, prior preservation and export call only
these, so the same code serves SD 2.1-base, SD 1.5, SD 2.1 (768 px, v-prediction), SDXL (`sdxl.py`), random
tiny models for tests and the architecture-only models of the benchmarks. A new family is one subclass and
one YAML file. Sizes that the released code hard-coded (latent side, attention side, latent scale,
prediction type) are read from here.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.errors import UserInputError
from break_a_scene.inputs import read_json
from break_a_scene.tokens import (
    PlaceholderTokens,
    add_placeholder_tokens,
    check_new_tokens,
    plain_token_embeddings,
    tokenize_all,
)


@dataclass
class DiffusionComponents:
    """Stable Diffusion 1.x / 2.x: one CLIP tokenizer and text encoder, the last hidden state conditions the
    UNet. Other families subclass it and override the text side and the pipeline."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    source: str = "built from config"

    pipeline_class: ClassVar[type[DiffusionPipeline]] = StableDiffusionPipeline
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        """The constructor's parts read from a pipeline directory, weights in float32."""
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=torch.float32,
                                                          **kwargs),
            "vae": component_class(root, "vae").from_pretrained(root, subfolder="vae", dtype=torch.float32, **kwargs),
            "unet": UNet2DConditionModel.from_pretrained(root, subfolder="unet", dtype=torch.float32, **kwargs),
            "noise_scheduler": DDPMScheduler.from_pretrained(root, subfolder="scheduler"),
        }

    # ---- the text side: what a family overrides ------------------------------------------------------
    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        """(pipeline attribute, text encoder) of every text encoder, in the order of `tokenizers`."""
        return [("text_encoder", self.text_encoder)]

    @property
    def tokenizers(self) -> list[CLIPTokenizer]:
        return [self.tokenizer]

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> tuple[torch.Tensor, dict]:
        """input_ids (B, E, T) from `tokenize` -> (the UNet's encoder_hidden_states, its other keyword inputs)."""
        return self.text_encoder(input_ids[:, 0])[0], {}

    def pipeline_parts(self) -> dict:
        """The keyword arguments of `pipeline_class` (the DDIM sampler of the released code as its scheduler)."""
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "unet": self.unet,
                "scheduler": self.inference_scheduler(), "safety_checker": None, "feature_extractor": None,
                "requires_safety_checker": False}

    # ---- the same for every family ---------------------------------------------------------------------
    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [encoder for _, encoder in self.named_text_encoders()]

    def parts(self) -> list[torch.nn.Module]:
        """Every module with weights: the text encoders, the VAE and the UNet."""
        return [*self.text_encoders, self.vae, self.unet]

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return tokenize_all(self.tokenizers, prompts)

    def check_new_tokens(self, names: list[str]) -> None:
        for tokenizer in self.tokenizers:
            check_new_tokens(tokenizer, names)

    def add_placeholder_tokens(self, names: list[str], initializer_words: list[str] | None = None) -> PlaceholderTokens:
        """Add the tokens to every tokenizer and text encoder (each encoder's rows initialised from its own
        embedding of the initializer words); they get the same ids everywhere, the ones returned."""
        added = [add_placeholder_tokens(tokenizer, encoder, names, initializer_words)
                 for tokenizer, encoder in zip(self.tokenizers, self.text_encoders)]
        if any(tokens.ids != added[0].ids for tokens in added):
            raise UserInputError(
                f"the placeholder tokens got different ids in this model's tokenizers ({[t.ids for t in added]}); "
                f"its tokenizers ({self.source}) must share one vocabulary."
            )
        return added[0]

    def pipeline(self) -> DiffusionPipeline:
        """The inference pipeline over these very modules (no copies), progress bar off."""
        pipe = self.pipeline_class(**self.pipeline_parts())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save_pipeline(self, path: str | Path) -> Path:
        """Write a diffusers pipeline directory (what `load_pretrained` and `DiffusionPipeline.from_pretrained`
        read), with plain embeddings holding the learned token rows."""
        with plain_token_embeddings(self.text_encoders):
            self.pipeline().save_pretrained(path)
        return Path(path)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet regresses at these timesteps: the velocity under v-prediction, else the noise."""
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return noise

    @property
    def unet_downsample_factor(self) -> int:
        """Latent pixels per pixel of the UNet's coarsest feature map (8 for SD's four blocks)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def latent_size(self, resolution: int) -> int:
        return resolution // self.vae_scale_factor

    def check_resolution(self, resolution: int) -> None:
        """Refuse a resolution the VAE and UNet cannot take, before any work is done."""
        step = self.vae_scale_factor * self.unet_downsample_factor
        if resolution <= 0 or resolution % step:
            lower, upper = (resolution // step) * step, (resolution // step + 1) * step
            hint = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            raise UserInputError(
                f"data.resolution={resolution} cannot be taken by this model ({self.source}): the VAE downsamples "
                f"by {self.vae_scale_factor} and the UNet by {self.unet_downsample_factor}, so the resolution must "
                f"be a positive multiple of {step}. Set data.resolution={hint}."
            )

    def inference_scheduler(self) -> DDIMScheduler:
        return released_sampler(self.noise_scheduler.config)


def released_sampler(scheduler_config) -> DDIMScheduler:
    """The released code's sampler: DDIM with the model's betas, no clipping, alpha_T not set to one."""
    return DDIMScheduler.from_config(scheduler_config, clip_sample=False, set_alpha_to_one=False)


@contextlib.contextmanager
def quiet_loading(logs: bool = True):
    """Silence diffusers' and transformers' loading and saving bars for the block, and with `logs` their
    loggers: on a damaged file they would print a traceback log before we say the error in one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    bars = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    if logs:
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        if logs:
            logging.disable(logging.NOTSET)
        for lib, enabled in zip(libraries, bars):
            if enabled:
                lib.enable_progress_bar()


PIPELINE_DIR = "a local diffusers pipeline directory (one with model_index.json, unet/, vae/, text_encoder/, ...)"


MODEL_SETTING = "model.components.pretrained_model_name_or_path"


def resolve_model_dir(pretrained_model_name_or_path: str, revision: str | None = None,
                      setting: str = MODEL_SETTING, expected: str = PIPELINE_DIR) -> Path:
    """A local directory, or the local Hugging Face cache snapshot of a hub id. Never downloads. A miss names
    the setting to point elsewhere and what that directory must hold."""
    path = Path(os.path.expanduser(pretrained_model_name_or_path))
    if path.is_dir():
        return path
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(
            snapshot_download(pretrained_model_name_or_path, revision=revision, local_files_only=True)
        )
    except Exception as err:  # the hub raises several types for "not cached" and "bad id"
        raise UserInputError(
            f"Model weights '{pretrained_model_name_or_path}' were not found: it is not a local directory and "
            f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}). Download them on a machine with internet "
            f"(`hf download {pretrained_model_name_or_path}`, or `huggingface-cli download ...` on older hubs), "
            f"or point {setting} at {expected}. ({type(err).__name__})"
        ) from None


# This package's modules whose model classes a pipeline folder may name (the toy world's VAE). Loading imports
# no other module a folder names: importing a module runs its code.
OWN_MODEL_MODULES = ("break_a_scene.toyworld.pixel_vae",)
_LIBRARIES = ("diffusers", "transformers")


def _importable(library: object) -> bool:
    """diffusers, transformers, one of OWN_MODEL_MODULES, or a pipeline module of diffusers itself (which names
    its safety checker `["stable_diffusion", ...]`)."""
    if not isinstance(library, str):
        return False
    if library in _LIBRARIES or library in OWN_MODEL_MODULES:
        return True
    return library.isidentifier() and importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None


def read_model_index(root: Path) -> dict:
    """A pipeline folder's model_index.json, refused unless every class it names comes from diffusers,
    transformers or this package's model modules (so loading the folder runs no code that came with it)."""
    file = root / "model_index.json"
    index = read_json(file, "pipeline index")
    fix = (f"Use a folder that DiffusionPipeline.save_pretrained wrote, or remove the entry from '{file}' if the "
           f"folder is yours.")
    pipeline = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(pipeline, str) or not isinstance(getattr(diffusers, pipeline, None), type):
        raise UserInputError(f"'{file}' names the pipeline {pipeline!r}, which is not a diffusers pipeline class; "
                             f"custom pipeline code is never run. {fix}")
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, (list, tuple)) or spec in ([None, None], (None, None)):
            continue  # a setting (requires_safety_checker), or an absent optional part
        if not (len(spec) == 2 and _importable(spec[0])
                and isinstance(spec[1], str) and spec[1].isidentifier()):
            raise UserInputError(
                f"'{file}' names its part '{part}' as {spec!r}, not a class of diffusers, transformers or "
                f"break_a_scene's models; loading it would run the code of a module the folder names. {fix}"
            )
    return index


def family_of(root: Path) -> type[DiffusionComponents]:
    """The family class of a pipeline directory, from the pipeline class its (checked) model_index.json names."""
    from break_a_scene.sdxl import StableDiffusionXLComponents  # the families that live in their own modules

    families = {family.pipeline_class.__name__: family for family in (DiffusionComponents, StableDiffusionXLComponents)}
    if not (root / "model_index.json").is_file():
        return DiffusionComponents
    return families.get(read_model_index(root)["_class_name"], DiffusionComponents)


def load_pretrained(
    pretrained_model_name_or_path: str, revision: str | None = None, variant: str | None = None
) -> DiffusionComponents:
    """Load a diffusers pipeline directory (from disk or the local cache) as its family's components."""
    root = resolve_model_dir(pretrained_model_name_or_path, revision)
    family = family_of(root)
    missing = [name for name in family.subfolders if not (root / name).is_dir()]
    if missing:
        raise UserInputError(
            f"'{root}' is not a diffusers {family.pipeline_class.__name__} directory: it lacks "
            f"{', '.join(missing)}/. Point {MODEL_SETTING} at a directory saved by "
            "DiffusionPipeline.save_pretrained."
        )
    kwargs = {"variant": variant} if variant else {}
    # training keeps fp32 master weights whatever the files hold (the toy world ships fp16)
    try:
        with quiet_loading():
            return family(**family.load_parts(root, kwargs), source=pretrained_model_name_or_path)
    except Exception as err:  # missing or truncated weights, broken configs: the files, not us
        raise UserInputError(
            f"the model in '{root}' cannot be loaded ({type(err).__name__}: {err}); its files are incomplete or "
            f"damaged. Download it again (`hf download {pretrained_model_name_or_path}`) or point "
            f"{MODEL_SETTING} at an intact diffusers pipeline directory."
        ) from None


def component_class(root: Path, part: str) -> type:
    """The class that a pipeline directory's model_index.json names for `part` (a model class of this package,
    like the toy world's VAE, is found the same way as AutoencoderKL)."""
    library, class_name = read_model_index(root)[part]
    found = getattr(importlib.import_module(library), class_name, None)
    if not isinstance(found, type):
        raise UserInputError(f"'{root / 'model_index.json'}' names {class_name!r} from {library} for its part "
                             f"'{part}', and {library} has no such class; the folder is damaged.")
    return found


def import_own_model_modules(root: Path) -> None:
    """Check a pipeline directory's model_index.json and import the model modules of this package that it
    names, so that diffusers (which imports no module a folder names) finds their classes."""
    for spec in read_model_index(root).values():
        if isinstance(spec, (list, tuple)) and spec[0] in OWN_MODEL_MODULES:
            importlib.import_module(spec[0])


def sd_noise_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_from_configs(
    text_encoder: dict, vae: dict | torch.nn.Module, unet: dict, prediction_type: str = "epsilon", seed: int = 0,
    source: str = "built from config", tokenizer: CLIPTokenizer | None = None, device: str = "cpu",
) -> DiffusionComponents:
    """Random-init parts from config dicts; deterministic for a seed.

    `vae` is an AutoencoderKL config, or an already built module (a `_target_` in the Hydra config, e.g. the
    toy world's PixelShuffleVAE). `tokenizer`: the real 49,408-token CLIP one by default, or any CLIP tokenizer
    (a `_target_` in the Hydra config, e.g. the toy world's pruned one). `device`: where the weights are made
    (random init of SD-sized parts takes about a minute on a CPU and seconds on a GPU).
    """
    torch.manual_seed(seed)
    tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **text_encoder,
    )
    with torch.device(device):
        return DiffusionComponents(
            tokenizer=tokenizer,
            text_encoder=CLIPTextModel(text_config),
            vae=AutoencoderKL(**vae) if isinstance(vae, dict) else vae,
            unet=UNet2DConditionModel(**unet),
            noise_scheduler=sd_noise_scheduler(prediction_type),
            source=source,
        )
