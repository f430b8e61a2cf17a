"""Every key of `method`, `data.loader` and `optimizer` is typed and checked before any work: a bad value of each,
made from the key's own type and bounds, stops bas-train with one line naming the key, and leaves no run folder."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from break_a_scene.cli import train as train_cli
from break_a_scene.lora import LoraSettings
from break_a_scene.settings import LoaderSettings, MethodSettings, OptimizerSettings
from tests.helpers import FAST, assert_one_line, run_entry


def bad_value(hint: object, bounds: tuple | None) -> str:
    """An override value the key must refuse: out of its bounds, or of the wrong kind for its type."""
    if bounds is not None:
        low, high, brackets = bounds
        if low is not None:
            return str(low if brackets[0] == "(" else low - 1)
        return str(high if brackets[1] == ")" else high + 1)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "16" if all(isinstance(a, int) for a in args) else "bogus"
    if hint is bool:
        return "maybe"
    if hint in (int, float):
        return "many"
    if hint is str:
        return "3"
    return "not_a_list"  # a list, or a choice or list that may be null


def cases() -> list[tuple[str, str]]:
    found = []
    for group, settings in (("method", MethodSettings), ("data.loader", LoaderSettings),
                            ("optimizer", OptimizerSettings), ("method.lora", LoraSettings)):
        hints = typing.get_type_hints(settings)
        for spec in fields(settings):
            if spec.name == "lora":
                continue  # its own keys are walked below
            bounds = spec.metadata.get("range")
            if group == "method.lora" and spec.name in ("rank", "alpha", "lr"):
                bounds = (0, None, "()")
            found.append((f"{group}.{spec.name}", bad_value(hints[spec.name], bounds)))
    return found


CASES = cases()


def test_every_key_is_walked():
    assert len(CASES) == len(fields(MethodSettings)) - 1 + len(fields(LoaderSettings)) + len(
        fields(OptimizerSettings)) + len(fields(LoraSettings))
    assert ("method.mask_downsampling", "bogus") in CASES and ("optimizer.state_bits", "16") in CASES
    assert ("method.phase1_lr", "0") in CASES and ("data.loader.flip_p", "-1") in CASES


@pytest.mark.parametrize("key,value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_a_bad_value_of_every_key_stops_bas_train_in_one_line(key, value, scene_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"{key}={value}",
                                           f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert_one_line(err, f"{key}=")
    assert not out.exists()


def test_a_renamed_key_names_its_new_name(scene_dir, tmp_path, capsys):
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", "method.compile_unet=default",
                                           f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert_one_line(err, "method.compile_unet is now method.compile_denoiser")
