"""Loading a model folder offline and safely: where it is (a local folder or the Hugging Face cache, never a
download), what its model_index.json may name (classes of diffusers, transformers and this package's models:
importing any other module would run its code), and quiet loading. The model families (`families/`) build
their parts on these.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from pathlib import Path

import diffusers

from break_a_scene.errors import UserInputError
from break_a_scene.inputs import read_json


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


PIPELINE_DIR = "a local diffusers pipeline directory (one saved by save_pretrained, with model_index.json)"


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


def module_path(library: object) -> str | None:
    """The full module path a model_index.json library name stands for, or None where it names none we load
    from: diffusers, transformers, one of OWN_MODEL_MODULES, or a pipeline module of diffusers itself (which
    names its safety checker `["stable_diffusion", ...]`: that is `diffusers.pipelines.stable_diffusion`, never
    a top-level `stable_diffusion` that a working directory or PYTHONPATH could hold)."""
    if not isinstance(library, str):
        return None
    if library in _LIBRARIES or library in OWN_MODEL_MODULES:
        return library
    if library.isidentifier() and importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None:
        return f"diffusers.pipelines.{library}"
    return None


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
        if not (len(spec) == 2 and module_path(spec[0]) is not None
                and isinstance(spec[1], str) and spec[1].isidentifier()):
            raise UserInputError(
                f"'{file}' names its part '{part}' as {spec!r}, not a class of diffusers, transformers or "
                f"break_a_scene's models; loading it would run the code of a module the folder names. {fix}"
            )
    return index


def component_class(root: Path, part: str) -> type:
    """The class that a pipeline directory's model_index.json names for `part` (a model class of this package,
    like the toy world's VAE, is found the same way as AutoencoderKL)."""
    library, class_name = read_model_index(root)[part]
    found = getattr(importlib.import_module(module_path(library)), class_name, None)
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
