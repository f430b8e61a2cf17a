"""The contract between training and everything after it: a diffusers pipeline directory with the extended
tokenizer, loadable by plain `DiffusionPipeline.from_pretrained`, plus `break_a_scene.json`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from break_a_scene.errors import UserInputError
from break_a_scene.models import DiffusionComponents, quiet_loading, save_pipeline_dir
from break_a_scene.tokens import plain_token_embedding

MANIFEST = "break_a_scene.json"


def export_pipeline(components: DiffusionComponents, path: str | Path, manifest: dict) -> Path:
    """Write the pipeline and manifest to a temporary sibling, then move it into place in one rename."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        with plain_token_embedding(components.text_encoder), quiet_loading(logs=False):
            save_pipeline_dir(components, staging)
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
    """Every file an export needs is there: model_index.json and each part's config and weights."""
    root = Path(path)
    index_file = root / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(
            f"'{index_file}' is missing or damaged ({type(err).__name__}); '{root}' is not an intact export. "
            f"Export it again, or point to an intact one."
        ) from None
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


def read_manifest(path: str | Path) -> dict:
    """The manifest of an exported pipeline, or a clear error when `path` is not one."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise UserInputError(
            f"'{path}' is not a Break-A-Scene output: it has no {MANIFEST}. Point to the `pipeline` folder that "
            f"training wrote (e.g. outputs/<run>/pipeline)."
        )
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"'{file}' is not valid JSON ({err}); the export is damaged. Export it again, or restore the file."
        ) from None
