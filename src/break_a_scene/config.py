"""Where the Hydra configs live, and the resolvers they use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def config_dir() -> str:
    """`conf/` of the repository (or $BREAK_A_SCENE_CONF for an installed package used elsewhere)."""
    override = os.environ.get("BREAK_A_SCENE_CONF")
    if override:
        return str(Path(override).resolve())
    return str(PACKAGE_DIR.parents[1] / "conf")


def register_resolvers() -> None:
    """`${bas.asset:scenes/coffee}`: a file shipped with the package."""
    if not OmegaConf.has_resolver("bas.asset"):
        OmegaConf.register_new_resolver("bas.asset", lambda rel: str(ASSETS_DIR / rel))
