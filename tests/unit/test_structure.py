"""The library's core knows nothing of its periphery: the toy world and the evaluation add to it, not the
other way round (as open_clip's library never imports its training code)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "break_a_scene"
CORE = ["models", "scene", "data", "module", "attention", "losses", "tokens", "export", "generate", "sampling", "optim",
        "precision", "prior", "training", "config", "outputs", "figures", "report", "clip_tokenizer", "t5_tokenizer",
        "errors", "callbacks", "families", "lora", "masks", "editing", "inputs", "checkpoints", "ema",
        "model_folders", "settings", "objective", "phases", "latent_cache", "devices", "run_view", "annotations",
        "composition"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("name", CORE)
def test_core_imports_neither_toyworld_nor_evaluation(name):
    files = sorted((PACKAGE / name).glob("*.py")) if (PACKAGE / name).is_dir() else [PACKAGE / f"{name}.py"]
    assert files and all(f.is_file() for f in files)
    for file in files:
        periphery = {m for m in imported_modules(file)
                     if m.startswith(("break_a_scene.toyworld", "break_a_scene.evaluation"))}
        assert not periphery, f"{file.name} imports {sorted(periphery)}"


def test_every_module_of_the_package_is_classified():
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(CORE) | {"toyworld", "evaluation", "cli"}


def test_callbacks_read_the_module_only_through_its_callback_view():
    """Every `module.<name>` a callback reads is a member of `module.CallbackView`."""
    from break_a_scene.run_view import CallbackView

    allowed = set(CallbackView.__annotations__) | {n for n in vars(CallbackView) if not n.startswith("_")}
    assert allowed == {"facts", "phase", "device", "inference_family"}
    read = set()
    for file in sorted((PACKAGE / "callbacks").glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in (
                    "module", "pl_module"):
                read.add((file.name, node.attr))
    assert read and {attr for _, attr in read} <= allowed, sorted(read)


def test_only_model_families_know_the_denoiser_is_a_unet():
    """Outside `families/`, no code reads `.unet` or names a UNet's cross-attention (`attn2`): the method
    reaches the denoiser through its family (tests/integration/test_families.py adds one)."""
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file.parent.name == "families":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            config = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cfg"
            if isinstance(node, ast.Attribute) and node.attr == "unet" and not config:  # cfg.unet: a config node
                found.append(f"{file.name}:{node.lineno}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ".attn2." in node.value:
                found.append(f"{file.name}:{node.lineno}")
    assert not found, found
