"""Error messages name settings that exist, and following a message's advice makes the run start."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from break_a_scene.cli import train as train_cli
from break_a_scene.config import config_dir, register_resolvers
from break_a_scene.evaluation.benchmark_sets import register_resolvers as register_evaluation_resolvers
from break_a_scene.settings import RENAMED
from tests.conftest import tiny_components
from tests.helpers import FAST, run_entry

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "break_a_scene"
GROUPS = ("model", "data", "method", "optimizer", "trainer", "callbacks", "logger", "paths", "evaluation", "benchmark",
          "generation", "edit", "masks", "vae", "unet", "hydra")
SETTING = re.compile(r"(?<![\w./-])((?:%s)(?:\.[a-z_0-9]+)+)(?![\w/(])" % "|".join(GROUPS))
CONFIGS = [("train", []), ("train", ["model=flux_arch"]),
           ("train", ["callbacks=checkpoint"]), ("evaluate", []), ("evaluate", ["evaluation=toyworld"]),
           ("generate", []), ("edit", []), ("masks", []), ("pretrain", [])]


def named_settings() -> dict[str, set[str]]:
    """Every dotted setting named in a string of the package (messages, hints), with the files naming it;
    file names (masks.json) and the package's own modules (evaluation.runner) are not settings."""
    found: dict[str, set[str]] = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in SETTING.finditer(node.value):
                    name = match.group(1)
                    if name.endswith((".json", ".md", ".txt", ".png")) or name == "hydra.main":
                        continue
                    module = PACKAGE / name.replace(".", "/")
                    if module.with_suffix(".py").is_file() or module.is_dir():
                        continue
                    found.setdefault(name, set()).add(file.name)
    return found


def test_every_setting_a_message_names_exists(tmp_path):
    register_resolvers()
    register_evaluation_resolvers()
    GlobalHydra.instance().clear()
    configs = []
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for name, overrides in CONFIGS:
            configs.append(compose(config_name=name, overrides=overrides, return_hydra_config=True))
    trees = [OmegaConf.to_container(cfg, resolve=False) for cfg in configs]
    named = named_settings()
    assert {"model.components.pretrained_model_name_or_path", "data.mask_channel", "edit.mask_channel"} <= set(named)
    unknown = {name: sorted(files) for name, files in named.items()
               if not any(_has(tree, name) for tree in trees) and name not in RENAMED}  # old names are refused
    assert not unknown, unknown


def _has(tree: dict, name: str) -> bool:
    for part in name.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return tiny_components().save_pipeline(tmp_path_factory.mktemp("model") / "tiny_sd")


ADVICE = {
    # case: (what makes the first run fail, the advice's pattern in the message, what the user then sets)
    "missing_weights": (["model=sd21_base", "model.resolution=64",
                         "model.components.pretrained_model_name_or_path=nobody/none"],
                        r"point (model\.components\.pretrained_model_name_or_path) at", "{model}"),
    "resolution": (["data.resolution=60"], r"Set (data\.resolution)=(\d+)", None),
    "run_folder_taken": (["__run_twice__"], r"add (overwrite)=(true)", None),
    "foreign_export_target": (["__foreign_export__"], r"set (callbacks\.export\.dirpath) to another folder",
                              "{tmp}/elsewhere"),
    "no_class_names": (["__no_classes__", "data.initializer_from_classes=true"], r"or (data\.scene\.class_names)",
                       "[red,blue]"),
}


@pytest.mark.parametrize("case", list(ADVICE))
def test_following_the_message_starts_the_run(case, saved_model, scene_dir, tmp_path, capsys):
    broken, pattern, value = ADVICE[case]
    out = tmp_path / "run"
    base = [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}"]
    overrides = [o for o in broken if not o.startswith("__")]
    if "__run_twice__" in broken:
        assert run_entry(train_cli.main, base, capsys)[0] == 0
        shutil.rmtree(out / "pipeline")
    if "__foreign_export__" in broken:
        (out / "pipeline").mkdir(parents=True)
        (out / "pipeline" / "notes.txt").write_text("mine")
    if "__no_classes__" in broken:
        (scene_dir / "classes.txt").unlink()
    code, err = run_entry(train_cli.main, [*base, *overrides], capsys)
    assert code == 2, err[-2000:]
    advice = re.search(pattern, err)
    assert advice, err
    key = advice.group(1)
    setting = advice.group(2) if value is None else value.format(model=saved_model, tmp=tmp_path)
    code, err = run_entry(train_cli.main, [*base, *overrides, f"{key}={setting}"], capsys)
    assert code == 0, err[-2000:]
