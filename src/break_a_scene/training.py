"""From a composed config to a finished run: every input is checked before any work, then Lightning fits.

The order matters for users: cheap checks of the settings and the scene come first, the model is loaded
next (a missing download is reported before anything is written), and only then are class images made,
loggers opened and training started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from break_a_scene.checkpoints import check_checkpoint
from break_a_scene.data import UnionSamplingDataModule
from break_a_scene.errors import DiskFullError, UserInputError
from break_a_scene.export import MANIFEST, check_export_target, check_lora_format
from break_a_scene.families.base import ModelFamily
from break_a_scene.model_folders import check_model_fits
from break_a_scene.models import resolve_model_dir
from break_a_scene.module import PHASE_KEY, BreakASceneModule
from break_a_scene.outputs import check_free_space, check_writable, free_bytes, is_disk_full
from break_a_scene.precision import set_tf32
from break_a_scene.prior import default_class_dir, ensure_class_images, list_class_images, load_class_images
from break_a_scene.scene import Scene, ScenePhotos, load_scene, photo_folders, prepare_photos, scene_warnings
from break_a_scene.settings import LoaderSettings, MethodSettings, OptimizerSettings
from break_a_scene.tokens import default_token_names

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """The run's typed settings, built (and so checked) before anything else."""

    method: MethodSettings
    loader: LoaderSettings
    optimizer: OptimizerSettings


def check_settings(cfg: DictConfig) -> Settings:
    """`method`, `data.loader` and `optimizer` as typed settings: every key checked, one line for a bad one."""
    return Settings(instantiate(cfg.method), instantiate(cfg.data.loader), instantiate(cfg.optimizer))


@dataclass
class CheckedInputs:
    settings: Settings
    scene: Scene | ScenePhotos
    family: ModelFamily
    token_names: list[str]
    initializer_words: list[str] | None


def token_names(cfg: DictConfig, num_masks: int) -> list[str]:
    """The placeholder names training gives a scene's concepts (data.tokens, or <asset0>, ...)."""
    concepts = num_masks + (1 if cfg.data.background_token else 0)
    names = list(cfg.data.tokens) if cfg.data.tokens else default_token_names(concepts)
    if len(names) != concepts:
        extra = " (the last one for the background token)" if cfg.data.background_token else ""
        raise UserInputError(
            f"data.tokens has {len(names)} names for {concepts} concepts{extra}; give one per concept."
        )
    return names


def _initializer_words(cfg: DictConfig, scene: Scene | ScenePhotos) -> list[str] | None:
    words = cfg.data.initializer_words
    if cfg.data.get("initializer_from_classes"):
        if words:
            raise UserInputError("data.initializer_words and data.initializer_from_classes=true both choose the "
                                 "tokens' initial rows; set one of them.")
        if not scene.class_names:
            raise UserInputError("data.initializer_from_classes=true needs class names: a classes.txt in the scene "
                                 "folder (one per mask) or data.scene.class_names.")
        words = [name.split()[0] if name.split() else name for name in scene.class_names]  # "red box" -> "red"
    if not words:
        return None
    num_masks = scene.num_concepts
    words = [words] * num_masks if isinstance(words, str) else list(words)  # one word for every mask
    if len(words) != num_masks:
        raise UserInputError(
            f"data.initializer_words has {len(words)} words for {num_masks} masks; give exactly one word per mask, "
            f"in mask order, or none (then the released code's rare-token rows are used)."
        )
    return words + (["background"] if cfg.data.background_token else [])


def _load_scene(cfg: DictConfig) -> Scene | ScenePhotos:
    """The configured scene; with data.scene.auto_masks, its masks are first made from its class names into the
    run's own `scene/` folder (the user's folder is only read), reused when a run resumes."""
    settings = cfg.data.scene
    if not settings.get("auto_masks"):
        return instantiate(settings)
    from break_a_scene.masks import REPORT, make_scene, read_classes, scene_image

    if cfg.get("masks") is None:
        raise UserInputError("data.scene.auto_masks=true needs the masks settings of bas-train (conf/masks/).")
    if settings.masks:
        raise UserInputError("data.scene.auto_masks=true makes the masks itself; remove data.scene.masks, or set "
                             "auto_masks=false to train on those masks.")
    if settings.folder and Path(settings.folder).is_dir() and photo_folders(Path(settings.folder)):
        raise UserInputError(f"data.scene.auto_masks=true makes the masks of one photo, but '{settings.folder}' holds "
                             f"several; run bas-masks on each photo's folder (hydra.run.dir=<that folder>), then "
                             f"train with auto_masks=false.")
    folder = Path(cfg.paths.output_dir) / "scene"
    if not (cfg.get("ckpt_path") and (folder / REPORT).is_file()):
        image = scene_image(settings.image or settings.folder)
        masks = OmegaConf.to_container(cfg.masks, resolve=True)
        given = masks.pop("classes")
        classes = read_classes(image, settings.class_names or given)
        make_scene(image, classes, folder, overwrite=bool(cfg.get("overwrite")), **masks)
    return load_scene(folder=str(folder), mask_channel=settings.mask_channel)


def check_inputs(cfg: DictConfig) -> CheckedInputs:
    """Everything that can be wrong with the settings or the inputs, reported before any work is done."""
    settings = check_settings(cfg)
    check_checkpoint(cfg.get("ckpt_path"), "bas-train with callbacks=checkpoint", PHASE_KEY)
    scene = _load_scene(cfg)
    names = token_names(cfg, scene.num_concepts)
    words = _initializer_words(cfg, scene)
    check_model_fits(cfg.model.components)
    family = instantiate(cfg.model.components)
    family.check_resolution(cfg.data.resolution)
    family.check_new_tokens(names)
    return CheckedInputs(settings, scene, family, names, words)


def _class_folder(cfg: DictConfig, family: ModelFamily) -> Path:
    prior = cfg.data.prior_preservation
    return Path(prior.class_data_dir or default_class_dir(
        cfg.paths.cache_dir, family.source, prior.class_prompt, cfg.data.resolution
    ))


def check_outputs(cfg: DictConfig, family: ModelFamily) -> None:
    """Every folder the run will write is writable, and the export replaces nothing that is not ours to
    replace, all found before any work is done."""
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            for key in ("dirpath", "save_dir"):
                if node is not None and node.get(key):
                    check_writable(node[key], f"{group}.{name}.{key}")
    export = (cfg.get("callbacks") or {}).get("export")
    if export is not None:
        target = Path(export.dirpath)
        check_export_target(target)
        if (target / MANIFEST).is_file() and not (cfg.get("overwrite") or cfg.get("ckpt_path")):
            raise UserInputError(
                f"export target '{target}' already holds a trained pipeline; set callbacks.export.dirpath to "
                f"another folder, or add overwrite=true to replace it."
            )
        check_lora_format(export.get("lora", "asset"))
        _check_quantized_export(cfg.method.quantize_frozen, export.get("lora", "asset"))
        lora = "lora" in (cfg.method.phase1_trainable, cfg.method.phase2_trainable)
        if lora and export.get("lora", "asset") in ("asset", "both"):
            _check_reloadable(family, bool(cfg.method.get("quantize_frozen")))
        _check_room(family, target)
    prior = cfg.data.prior_preservation
    if prior.enabled and prior.generate_missing:
        setting = "data.prior_preservation.class_data_dir" if prior.class_data_dir else "paths.cache_dir"
        check_writable(_class_folder(cfg, family), setting)


def _check_quantized_export(quantize: str | None, lora: str) -> None:
    """Quantized base weights are for training under adapters; an export of them would be lossy."""
    if not quantize:
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserInputError(f"method.quantize_frozen={quantize} needs bitsandbytes: pip install "
                             f"'break-a-scene[low-memory]' (or pip install bitsandbytes).") from None
    if lora != "asset":
        raise UserInputError(
            f"method.quantize_frozen={quantize} holds the base weights quantized, and a fused export would save them "
            f"so; set callbacks.export.lora=asset (token rows + LoRA weights for the full-precision base model)."
        )


def _check_room(family: ModelFamily, export_target: Path) -> None:
    """The export's disk can hold it (the model's weights; a LoRA asset is smaller). Checkpoints are not
    counted: a disk that fills up with them stops the run with what to free and how to resume."""
    weights = sum(p.numel() * p.element_size() for part in family.parts() for p in part.parameters())
    check_free_space(export_target, weights, "callbacks.export.dirpath", "the export")


def _check_reloadable(family: ModelFamily, quantized: bool) -> None:
    """A LoRA asset is loaded onto its base model later, so the base must be one that can be loaded again."""
    try:
        resolve_model_dir(family.source)
    except UserInputError:
        save = ("save the model as a folder first (`bas-save-model model=<this model config> out=models/base`) and "
                "train on that folder (bas-save-model names the model config that loads it)")
        fused = "" if quantized else "set callbacks.export.lora=fused (a full pipeline), or "
        raise UserInputError(
            f"a LoRA phase 2 exports an asset for its base model, but the model '{family.source}' was not "
            f"loaded from a directory or the Hugging Face cache, so the asset could not be used; {fused}{save}."
        ) from None


def prepare_class_images(cfg: DictConfig, family: ModelFamily):
    """The prior-preservation class images as a tensor (generated once into the cache when missing), or None."""
    prior = cfg.data.prior_preservation
    if not prior.enabled:
        return None
    folder = _class_folder(cfg, family)
    if prior.generate_missing:
        paths = ensure_class_images(
            family, folder, prior.num_class_images, prior.class_prompt, cfg.data.resolution,
            prior.num_inference_steps, prior.guidance_scale, prior.sample_batch_size, cfg.seed,
        )
    else:
        paths = list_class_images(folder)
        if len(paths) < prior.num_class_images:
            raise UserInputError(
                f"data.prior_preservation.class_data_dir '{folder}' holds {len(paths)} images but "
                f"num_class_images={prior.num_class_images}; add images or set generate_missing=true."
            )
        paths = paths[: prior.num_class_images]
    return load_class_images(paths, cfg.data.resolution)


def build_run(cfg: DictConfig) -> tuple[L.Trainer, BreakASceneModule, UnionSamplingDataModule]:
    """Check the inputs, then build the module, datamodule and trainer of one training run."""
    inputs = check_inputs(cfg)
    check_outputs(cfg, inputs.family)
    photos = prepare_photos(inputs.scene, cfg.data.resolution, background=cfg.data.background_token)
    attention_side = inputs.family.latent_size(cfg.data.resolution) // cfg.method.attention_resolution_divisor
    sources = [p.source for p in inputs.scene.photos] if isinstance(inputs.scene, ScenePhotos) else [None]
    for source, photo in zip(sources, photos):
        for warning in scene_warnings(photo, inputs.token_names, attention_side):
            log.warning(f"{source}: {warning}" if source else warning)
    L.seed_everything(cfg.seed, workers=True)
    set_tf32(cfg.get("tf32", True))
    class_images = prepare_class_images(cfg, inputs.family)
    tokens = inputs.family.add_placeholder_tokens(inputs.token_names, inputs.initializer_words)
    class_names = inputs.scene.class_names
    if class_names is not None and cfg.data.background_token:
        class_names = [*class_names, "background"]
    run_info = {
        "class_names": class_names,
        "scene": inputs.scene.source,
        "model": inputs.family.source,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    settings = inputs.settings
    module = BreakASceneModule(inputs.family, tokens, settings.method, cfg.data.resolution,
                               optimizer=settings.optimizer, run_info=run_info)
    datamodule = UnionSamplingDataModule(
        photos, inputs.family.tokenizers, tokens.names, tokens.ids, module.total_steps, settings.loader,
        seed=cfg.seed, class_images=class_images, class_prompt=cfg.data.prior_preservation.class_prompt,
        token_lengths=inputs.family.token_lengths,
    )
    trainer = build_trainer(cfg, max_steps=module.total_steps)
    return trainer, module, datamodule


def build_trainer(cfg: DictConfig, max_steps: int) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    checkpointing = any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks)
    return instantiate(
        cfg.trainer, max_steps=max_steps, callbacks=callbacks, logger=loggers or False,
        enable_checkpointing=checkpointing,
    )


def train(cfg: DictConfig) -> BreakASceneModule:
    trainer, module, datamodule = build_run(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except Exception as err:
        if is_disk_full(err):
            raise DiskFullError(_disk_full_advice(cfg, trainer)) from None
        raise
    return module


def _disk_full_advice(cfg: DictConfig, trainer: L.Trainer) -> str:
    """What to free and how to resume, when the disk filled up during training (what was written is kept)."""
    out = Path(cfg.paths.output_dir)
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    if last and Path(last).is_file():
        resume = (f"then run the same command with ckpt_path={last}: it resumes there and finishes what is left, "
                  f"the export included")
    else:
        resume = "then train again (no checkpoint was kept: callbacks=checkpoint makes a run resumable)"
    return (f"the disk holding '{out}' filled up during training ({free_bytes(out) / 2**20:.0f} MB free now): free "
            f"space there (older runs' checkpoints/ and pipeline/ folders are the largest), {resume}.")
