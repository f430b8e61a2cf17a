"""The contract between training and everything after it: a diffusers pipeline directory with the extended
tokenizer, loadable by plain `DiffusionPipeline.from_pretrained`, plus `break_a_scene.json`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from break_a_scene.errors import UserInputError
from break_a_scene.models import DiffusionComponents, save_pipeline_dir

MANIFEST = "break_a_scene.json"


def export_pipeline(components: DiffusionComponents, path: str | Path, manifest: dict) -> Path:
    """Write the pipeline and manifest to a temporary sibling, then move it into place in one rename."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_pipeline_dir(components, staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def read_manifest(path: str | Path) -> dict:
    """The manifest of an exported pipeline, or a clear error when `path` is not one."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise UserInputError(
            f"'{path}' is not a Break-A-Scene output: it has no {MANIFEST}. Point to the `pipeline` folder that "
            f"training wrote (e.g. outputs/<run>/pipeline)."
        )
    return json.loads(file.read_text())
