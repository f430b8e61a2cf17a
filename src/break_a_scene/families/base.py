"""The model-family seam: all that the method needs to know about a text-to-image model, in one class.

A family owns loading its parts offline (or building them from config dicts), its tokenizers and text
encoders (the placeholder tokens go into each), the denoiser's conditioning and call, the training noise,
timesteps and regression target, which of its layers give the per-token attention maps and how, its LoRA
targets, its sampler, and the diffusers pipeline class for export and generation. Training, sampling, prior
preservation, LoRA and export call only these, so a new family is one subclass (in this package, or in any
module the process has imported) and one model YAML whose `_target_` names its `load` or `build`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from typing import Callable, ClassVar

import torch
from diffusers import DiffusionPipeline

from break_a_scene.attention import token_positions
from break_a_scene.errors import UserInputError
from break_a_scene.models import MODEL_SETTING, quiet_loading, read_model_index, resolve_model_dir
from break_a_scene.tokens import (
    PlaceholderTokens,
    add_placeholder_tokens,
    check_new_tokens,
    plain_token_embeddings,
    tokenize_all,
)

Conditioning = tuple[torch.Tensor, dict]  # the denoiser's text input and its other keyword inputs


class ModelFamily:
    """What every family provides; subclasses are dataclasses holding their parts (`vae`, `noise_scheduler`,
    `source` and their own tokenizers, text encoders and denoiser)."""

    vae: torch.nn.Module
    noise_scheduler: object
    source: str

    pipeline_class: ClassVar[type[DiffusionPipeline]]
    denoiser_name: ClassVar[str]  # the pipeline's attribute for the denoiser: "unet", "transformer"
    subfolders: ClassVar[tuple[str, ...]]  # what a pipeline folder of the family must hold
    optional_parts: ClassVar[tuple[str, ...]] = ()  # pipeline parts it may leave out (None), which diffusers
    # wants named when loading (SD3's T5)

    # ---- what a family implements ---------------------------------------------------------------------
    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        """The constructor's parts read from a pipeline folder (float32 weights), `source` excepted. A family may
        take keyword options after `kwargs`: its own loading choices, set in the model config (SD 3's
        `text_encoder_3`)."""
        raise NotImplementedError

    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        """(pipeline attribute, text encoder) of every text encoder, in the order of `tokenizers`."""
        raise NotImplementedError

    @classmethod
    def pipeline_tokenizers(cls, pipe) -> list:
        """The tokenizers of a pipeline (or of the family's own parts, which have the same names), one per text
        encoder in `named_text_encoders`' order."""
        return [pipe.tokenizer]

    @classmethod
    def token_lengths_of(cls, tokenizers: list) -> list[int]:
        """How many positions each tokenizer's ids fill, as the pipeline tokenizes (CLIP: 77)."""
        return [tokenizer.model_max_length for tokenizer in tokenizers]

    @classmethod
    def key_positions(cls, input_ids: torch.Tensor, token_ids: list[torch.Tensor], lengths: list[int]) -> torch.Tensor:
        """(B, K, P): where each token's P text keys sit in the text sequence the denoiser attends to, -1 where
        absent. input_ids (B, E, T) from `tokenize`; token_ids[e] (B, K) the tokens' ids in encoder e (-1 where
        padded). By default the sequence is the first encoder's (a UNet's cross-attention context)."""
        return token_positions(input_ids[:, 0], token_ids[0]).unsqueeze(-1)

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        """input_ids (B, E, T) from `tokenize` -> the denoiser's text input and its other keyword inputs."""
        raise NotImplementedError

    def training_inputs(self, latents: torch.Tensor, generator: torch.Generator | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, timesteps, target) of a training step, random draws from `generator` only."""
        raise NotImplementedError

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                forward: Callable | None = None) -> torch.Tensor:
        """The denoiser's prediction, (B, C, h, w) like `noisy`; `forward` replaces the denoiser's own forward
        (a compiled one)."""
        raise NotImplementedError

    def attention_capture(self, latent_size: int, attention_side: int, released: bool = False):
        """A capture (install/remove/token_maps, see attention.py) on the layers the attention loss reads at
        `attention_side`; `released`: what the released code kept, for the benchmark's comparison."""
        raise NotImplementedError

    @classmethod
    def pipeline_attention_capture(cls, pipe: DiffusionPipeline, latent_size: int, attention_side: int):
        """The same capture on a loaded pipeline's denoiser, for sampling with attention maps."""
        raise NotImplementedError

    def cross_attention_kv(self) -> list[torch.nn.Parameter]:
        """The text-to-image key and value projections (Custom Diffusion's trainable set)."""
        raise NotImplementedError

    lora_target_modules: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    default_guidance_scale: ClassVar[float] = 7.5  # what its pipeline samples with unless told (bas-generate)

    @property
    def lora_text_encoders(self) -> list[str]:
        """The text encoders that take LoRA adapters (with `method.lora.text_encoders`): those whose adapters
        diffusers' LoRA loader for the pipeline reads back. By default every one."""
        return [name for name, _ in self.named_text_encoders()]

    @property
    def denoiser_downsample_factor(self) -> int:
        """Latent pixels per pixel of the denoiser's coarsest grid (its patch size, or a UNet's downsampling)."""
        raise NotImplementedError

    def pipeline_parts(self) -> dict:
        """The keyword arguments of `pipeline_class`, with the family's sampler as its scheduler."""
        raise NotImplementedError

    @classmethod
    def conditional_rows(cls, batch: int, guidance_scale: float) -> slice:
        """The rows of a pipeline's denoiser batch that hold the prompts: the second half under classifier-free
        guidance (the pipelines put the unconditional half first), else all."""
        return slice(batch, None) if guidance_scale > 1 else slice(None)

    @classmethod
    def call_kwargs(cls) -> dict:
        """What the family's pipeline must be called with to condition as training does (beyond the prompt)."""
        return {}

    @classmethod
    def inference_scheduler_for(cls, scheduler_config) -> object:
        """The family's sampler made from a scheduler config (a base model's, when a LoRA asset is put on it)."""
        raise NotImplementedError

    def inference_scheduler(self) -> object:
        return self.inference_scheduler_for(self.noise_scheduler.config)

    # ---- editing (bas-edit): an image's latents at a sampling step --------------------------------------
    @classmethod
    def image_latents(cls, pipe: DiffusionPipeline, pixels: torch.Tensor) -> torch.Tensor:
        """(3, R, R) in [-1, 1] -> (1, C, r, r): the latents the pipeline's denoiser samples in (the VAE's
        posterior mode, shifted and scaled as the pipeline decodes them back)."""
        vae = pipe.vae
        with torch.no_grad():
            mode = vae.encode(pixels[None].to(vae.device, vae.dtype)).latent_dist.mode().float()
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        return (mode - shift) * float(vae.config.scaling_factor)

    @classmethod
    def noised_to(cls, scheduler, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """`latents` (B, C, r, r) noised to the level the sampler's input has at its step `step` (after
        `set_timesteps`): DDPM's forward process at that step's timestep."""
        return scheduler.add_noise(latents, noise, scheduler.timesteps[step : step + 1].repeat(len(latents)))

    @classmethod
    def pipeline_layout(cls, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, r, r) latents as the pipeline holds them between steps (what its step callback sees)."""
        return latents

    # ---- the same for every family ------------------------------------------------------------------
    @classmethod
    def load(cls, pretrained_model_name_or_path: str, revision: str | None = None, variant: str | None = None,
             **options):
        """Load a diffusers pipeline folder (from disk or the local cache) as this family's parts."""
        _check_options(cls, options)
        root = resolve_model_dir(pretrained_model_name_or_path, revision)
        if (root / "model_index.json").is_file():
            held = read_model_index(root)["_class_name"]
            if held != cls.pipeline_class.__name__:
                raise UserInputError(
                    f"'{root}' holds a {held}, but this model config loads a {cls.pipeline_class.__name__} "
                    f"({cls.__name__}); choose the model config of its family (conf/model/), or point "
                    f"{MODEL_SETTING} at a {cls.pipeline_class.__name__} folder."
                )
        missing = [name for name in cls.subfolders if not (root / name).is_dir()]
        if missing:
            raise UserInputError(
                f"'{root}' is not a diffusers {cls.pipeline_class.__name__} directory: it lacks "
                f"{', '.join(missing)}/. Point {MODEL_SETTING} at a directory saved by "
                f"DiffusionPipeline.save_pretrained."
            )
        kwargs = {"variant": variant} if variant else {}
        # training keeps fp32 master weights whatever the files hold (the toy world ships fp16)
        try:
            with quiet_loading():
                return cls(**cls.load_parts(root, kwargs, **options), source=pretrained_model_name_or_path)
        except UserInputError:
            raise
        except Exception as err:  # missing or truncated weights, broken configs: the files, not us
            raise UserInputError(
                f"the model in '{root}' cannot be loaded ({type(err).__name__}: {err}); its files are incomplete or "
                f"damaged. Download it again (`hf download {pretrained_model_name_or_path}`) or point "
                f"{MODEL_SETTING} at an intact diffusers pipeline directory."
            ) from None

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self, self.denoiser_name)

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [encoder for _, encoder in self.named_text_encoders()]

    @property
    def tokenizers(self) -> list:
        return self.pipeline_tokenizers(self)

    @property
    def token_lengths(self) -> list[int]:
        return self.token_lengths_of(self.tokenizers)

    def text_key_positions(self, input_ids: torch.Tensor, token_ids: torch.Tensor,
                           tokens: PlaceholderTokens) -> torch.Tensor:
        """`key_positions` for a batch: token_ids (B, K) are first-tokenizer ids, as batches carry them."""
        return self.key_positions(input_ids, [tokens.translate(token_ids, e) for e in range(len(self.tokenizers))],
                                  self.token_lengths)

    @classmethod
    def prompt_key_positions(cls, pipe, prompts: list[str], tokens: list[str]) -> torch.Tensor:
        """`key_positions` of named tokens in prompts, tokenized by a pipeline's tokenizers (for sampling maps)."""
        tokenizers = cls.pipeline_tokenizers(pipe)
        lengths = cls.token_lengths_of(tokenizers)
        ids = [torch.tensor(t.convert_tokens_to_ids(tokens)).expand(len(prompts), -1) for t in tokenizers]
        return cls.key_positions(tokenize_all(tokenizers, prompts, lengths), ids, lengths)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoiser's and the text encoders' activations in the backward pass instead of keeping
        them."""
        self.denoiser.enable_gradient_checkpointing()
        for encoder in self.text_encoders:
            enable = getattr(encoder, "activation_checkpointing_enable", None)  # transformers >= 5
            (enable or encoder.gradient_checkpointing_enable)()

    def parts(self) -> list[torch.nn.Module]:
        """Every module with weights: the text encoders, the VAE and the denoiser."""
        return [*self.text_encoders, self.vae, self.denoiser]

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """(B, E, T): see `tokenize_all`."""
        return tokenize_all(self.tokenizers, prompts, self.token_lengths)

    def check_new_tokens(self, names: list[str]) -> None:
        for tokenizer in self.tokenizers:
            check_new_tokens(tokenizer, names)

    def add_placeholder_tokens(self, names: list[str], initializer_words: list[str] | None = None) -> PlaceholderTokens:
        """Add the tokens to every tokenizer and text encoder, each encoder's rows initialised by the same rule
        from its own embedding (T5's ids differ from CLIP's: `PlaceholderTokens.ids_in`)."""
        added = [add_placeholder_tokens(tokenizer, encoder, names, initializer_words)
                 for tokenizer, encoder in zip(self.tokenizers, self.text_encoders)]
        return PlaceholderTokens(added[0].names, added[0].ids, added[0].initializer_words,
                                 encoder_ids=[tokens.ids for tokens in added])

    def pipeline(self) -> DiffusionPipeline:
        """The inference pipeline over these very modules (no copies), progress bar off."""
        pipe = self.pipeline_class(**self.pipeline_parts())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save_pipeline(self, path: str | Path) -> Path:
        """Write a diffusers pipeline directory (what `load` and `DiffusionPipeline.from_pretrained` read),
        with plain embeddings holding the learned token rows."""
        with plain_token_embeddings(self.text_encoders):
            self.pipeline().save_pretrained(path)
        return Path(path)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for SD and the MM-DiTs)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_shift(self) -> float:
        """Subtracted before scaling (SD3's and FLUX's VAEs have one; SD's has none)."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def latent_size(self, resolution: int) -> int:
        return resolution // self.vae_scale_factor

    def check_resolution(self, resolution: int) -> None:
        """Refuse a resolution the VAE and denoiser cannot take, before any work is done."""
        step = self.vae_scale_factor * self.denoiser_downsample_factor
        if resolution <= 0 or resolution % step:
            lower, upper = (resolution // step) * step, (resolution // step + 1) * step
            hint = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            raise UserInputError(
                f"data.resolution={resolution} cannot be taken by this model ({self.source}): the VAE downsamples "
                f"by {self.vae_scale_factor} and the {self.denoiser_name} by {self.denoiser_downsample_factor}, "
                f"so the resolution must be a positive multiple of {step}. Set data.resolution={hint}."
            )

    @classmethod
    def qualified_name(cls) -> str:
        """What an export's manifest records to find the family again (`family_named`)."""
        return f"{cls.__module__}.{cls.__qualname__}"


def _check_options(family: type[ModelFamily], options: dict) -> None:
    """Refuse a loading option the family does not take, before anything is read."""
    taken = [name for name, parameter in inspect.signature(family.load_parts).parameters.items()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY or name not in ("cls", "root", "kwargs")]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise UserInputError(
            f"model.components.{unknown[0]} is not a setting of {family.__name__}.load; it takes "
            f"pretrained_model_name_or_path, revision, variant{''.join(', ' + name for name in taken)}."
        )


def _builtin_families() -> list[type[ModelFamily]]:
    """The families of this package: every module of `break_a_scene.families` is imported and its subclasses
    of ModelFamily collected (no hand-kept list)."""
    import break_a_scene.families as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    found, todo = [], list(ModelFamily.__subclasses__())
    while todo:
        family = todo.pop()
        todo.extend(family.__subclasses__())
        if family.__module__.startswith(f"{package.__name__}."):  # not a family some other module defined
            found.append(family)
    return found


def _is_family_module(name: str) -> bool:
    """A module of this package's families folder (found without importing anything else)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. a name below a module that is not a package
        return False


def family_named(name: object, pipeline_class_name: str) -> type[ModelFamily]:
    """The family an export's manifest names: a class of this package, or of a module the process has
    already imported (a manifest never makes anything be imported), that makes the pipeline class its files
    (or its base model's) hold. Without a name (an export from before families were recorded), the package's
    family of its pipeline class."""
    if name is None:
        matching = [f for f in _builtin_families() if f.pipeline_class.__name__ == pipeline_class_name]
        if not matching:
            raise UserInputError(f"no model family of break_a_scene makes a {pipeline_class_name}.")
        return min(matching, key=lambda f: len(f.__mro__))  # the most general, e.g. SD 1.x/2.x for the toy model
    again = "export it again (bas-train writes the manifest), or restore its break_a_scene.json."
    if not isinstance(name, str):
        raise UserInputError(f"the export's manifest names its model family as {name!r}, not a class name; {again}")
    module_name, _, class_name = name.rpartition(".")
    if module_name.startswith("break_a_scene.families.") and _is_family_module(module_name):
        importlib.import_module(module_name)
    family = getattr(sys.modules.get(module_name), class_name, None)
    if not (isinstance(family, type) and issubclass(family, ModelFamily)):
        raise UserInputError(f"the export names the model family {name!r}, which is neither one of "
                             f"break_a_scene.families nor imported by this program; {again}")
    made = getattr(family, "pipeline_class", None)
    if made is None:
        raise UserInputError(f"the export names the model family {name!r}, which is the seam itself, not a family "
                             f"that makes a pipeline; {again}")
    if made.__name__ != pipeline_class_name:
        raise UserInputError(f"the export names the model family {name!r}, which makes a {made.__name__}, but its "
                             f"model (a LoRA asset's: its base model) is a {pipeline_class_name}; {again}")
    return family
