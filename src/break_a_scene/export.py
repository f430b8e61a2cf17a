"""The contract between training and everything after it: a diffusers pipeline directory with the extended
tokenizer, loadable by plain `DiffusionPipeline.from_pretrained`, plus `break_a_scene.json`. A LoRA phase 2
exports a small asset instead (or as well): token rows and LoRA weights for the untouched base model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from break_a_scene.errors import UserInputError
from break_a_scene.families.base import ModelFamily
from break_a_scene.inputs import read_json
from break_a_scene.lora import LORA_WEIGHTS, TOKEN_EMBEDDINGS, adapted_modules, merged_lora, save_lora_asset
from break_a_scene.models import quiet_loading, read_model_index

MANIFEST = "break_a_scene.json"
LORA_FORMATS = ("asset", "fused", "both")


def check_lora_format(lora: str) -> None:
    if lora not in LORA_FORMATS:
        raise UserInputError(f"callbacks.export.lora={lora!r}; use one of {', '.join(LORA_FORMATS)}.")


def export_pipeline(family: ModelFamily, path: str | Path, manifest: dict, lora: str = "asset") -> Path:
    """Write the export and its manifest to a temporary sibling, then move it into place in one rename.

    A model with LoRA adapters writes, by `lora`: the asset alone (manifest format "lora_asset", with the
    base model to load it onto), the fused full pipeline, or both in one folder."""
    check_lora_format(lora)
    adapted = bool(adapted_modules(family))
    asset, fused = adapted and lora in ("asset", "both"), not adapted or lora in ("fused", "both")
    manifest = {**manifest, "format": "pipeline" if fused else "lora_asset", "family": family.qualified_name()}
    if asset:
        manifest["base_model"] = family.source
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        staging.mkdir()
        with quiet_loading(logs=False):
            if asset:
                save_lora_asset(family, manifest.get("encoder_token_ids") or [manifest["token_ids"]], staging)
            if fused:
                with merged_lora(family):
                    family.save_pipeline(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        _readable_like_the_manifest(staging)
        check_export_target(final)
        previous = final.with_name(f".{final.name}.partial-{os.getpid()}-previous")
        if final.exists():
            os.replace(final, previous)  # an earlier export of ours: swapped out, then removed
        os.replace(staging, final)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _readable_like_the_manifest(folder: Path) -> None:
    """safetensors writes its files 0600; give every file the mode an ordinary file gets here (the umask's)."""
    mode = (folder / MANIFEST).stat().st_mode & 0o777
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def check_export_target(path: str | Path) -> None:
    """Refuse an export target that exists and is not an earlier export: it is not ours to replace."""
    path = Path(path)
    if path.exists() and not (path / MANIFEST).is_file():
        raise UserInputError(
            f"export target '{path}' exists and is not a Break-A-Scene export (no {MANIFEST}); it will not be "
            f"replaced. Move it away or set callbacks.export.dirpath to another folder."
        )


def _remove_stale_staging(final: Path) -> None:
    """Remove what an earlier export to `final` left when it was killed (its process is gone)."""
    for staging in final.parent.glob(f".{final.name}.partial-*"):
        pid = staging.name.split(".partial-", 1)[1].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def check_export_files(path: str | Path) -> None:
    """Every file an export needs is there: model_index.json and each part's config and weights (an asset:
    its token rows and LoRA weights)."""
    root = Path(path)
    if read_manifest(root).get("format") == "lora_asset":
        missing = [name for name in (TOKEN_EMBEDDINGS, LORA_WEIGHTS) if not (root / name).is_file()]
        if missing:
            raise UserInputError(f"the LoRA asset in '{root}' lacks {', '.join(missing)}; export it again, or "
                                 f"point to an intact one.")
        return
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise UserInputError(f"'{index_file}' is missing; '{root}' is not an intact export. Export it again, or "
                             f"point to an intact one.")
    index = read_model_index(root)
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        folder = root / part
        files = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        needs_weights = (folder / "config.json").is_file()
        has_weights = any(name.endswith((".safetensors", ".bin")) for name in files)
        if not files or (needs_weights and not has_weights):
            raise UserInputError(
                f"the export in '{root}' lacks the weights of its {part} ({folder} holds {len(files)} files); "
                f"export it again, or point to an intact one."
            )


# what every reader of a manifest relies on: key -> (check, what it holds)
_MANIFEST_KEYS = {
    "tokens": (lambda v: isinstance(v, list) and v and all(isinstance(t, str) for t in v), "the learned token names"),
    "resolution": (lambda v: isinstance(v, int) and v > 0, "the training resolution"),
}


def read_manifest(path: str | Path) -> dict:
    """The manifest of an exported pipeline, or a clear error when `path` is not one or it is damaged."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise UserInputError(
            f"'{path}' is not a Break-A-Scene output: it has no {MANIFEST}. Point to the `pipeline` folder that "
            f"training wrote (e.g. outputs/<run>/pipeline)."
        )
    manifest = read_json(file, "manifest")
    fix = "the export is damaged. Export it again, or restore the file."
    if not isinstance(manifest, dict):
        raise UserInputError(f"'{file}' does not hold a JSON object; {fix}")
    for key, (valid, meaning) in _MANIFEST_KEYS.items():
        if not valid(manifest.get(key)):
            raise UserInputError(f"'{file}' lacks a valid \"{key}\" ({meaning}); {fix}")
    if manifest.get("format") == "lora_asset" and not isinstance(manifest.get("base_model"), str):
        raise UserInputError(f"'{file}' is a LoRA asset without a \"base_model\" (the model it adapts); {fix}")
    return manifest
