"""One evaluation trial: a method on a scene with a training seed. Train (or reuse the trial's exported
pipeline), generate the prompt set with fixed seeds in batches, score, and append one row per image to the
trial's `rows.csv`. Rerunning skips the rows already written. Everything a trial needs (scene, class names,
prompts, the scorer's weights) is checked before it trains. In a sweep a failed trial is recorded in
`failed.json` and, by default, does not stop the others; a single trial's user error ends the command (exit
status 2). `bas-aggregate` gathers every trial's rows. While a trial trains and samples, its folder holds
`.running` (who holds it), so two runners never work on one trial: a sweep skips a held trial, a single trial
stops with one line.

Trial folder: <evaluation.out_dir>/<method_name>/<scene>/seed_<seed>/ (see conf/evaluate.yaml).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from tqdm import tqdm

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.benchmark_sets import library_folders, read_index, read_split, scene_folder
from break_a_scene.evaluation.prompts import PAPER_TEMPLATES, EvalPrompt, prompt_set, read_templates
from break_a_scene.evaluation.rows import ROWS_FILE, read_rows_file
from break_a_scene.export import MANIFEST, read_manifest
from break_a_scene.scene import SceneTensors, image_to_tensor, load_scene, prepare_photos

log = logging.getLogger(__name__)
FAILED_FILE = "failed.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".running"


class TrialBusy(UserInputError):
    """Another runner holds the trial folder."""


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds():
    """While held, SIGTERM (SLURM's preemption and time limit, `kill`) raises SystemExit, so `finally` blocks run;
    Python's default would end the process at once. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def trial_lock(trial: Path):
    """Hold `trial` for this process: `.running` is created only where it does not exist (atomic, also on NFS),
    names its holder, and is removed when the work ends, however it ends, SIGTERM included. A runner killed
    outright (SIGKILL, a lost node) leaves it."""
    trial.mkdir(parents=True, exist_ok=True)
    lock = trial / LOCK_FILE
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = lock.read_text(errors="replace").strip() if lock.is_file() else "unknown"
        raise TrialBusy(f"trial {trial} is held by another runner ({holder}); wait for it, or delete {lock} if no "
                        f"runner is working on it (one killed outright leaves it).") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    try:
        with _sigterm_unwinds():
            yield
    finally:
        lock.unlink(missing_ok=True)


def _scene_photos(folder: str | Path, resolution: int) -> list[SceneTensors]:
    return prepare_photos(load_scene(folder), resolution)


def trial_prompts(cfg: DictConfig, folder: str, tokens: list[str], class_names: list[str]) -> list[EvalPrompt]:
    if cfg.evaluation.world == "toyworld":
        from break_a_scene.evaluation.toy import toy_prompt_set
        from break_a_scene.toyworld.scenes import read_scene_json

        return toy_prompt_set(read_scene_json(folder), tokens, cfg.evaluation.prompts.per_subset,
                              cfg.evaluation.prompts.seed)
    templates = cfg.evaluation.prompts.templates
    templates = PAPER_TEMPLATES if templates == "paper" else read_templates(templates)
    return prompt_set(tokens, class_names, templates, cfg.evaluation.prompts.max_concepts)


def _check_scorer(cfg: DictConfig) -> None:
    """The scorer's weights can be found and read (the toy judge, or the paper's CLIP, DINO, DreamSim and the
    detector), before the trial trains: a damaged file is named then, not after the training time is spent."""
    from break_a_scene.evaluation.scorers import check_paper_weights, check_weights_load

    if cfg.evaluation.world == "toyworld":
        if not Path(cfg.evaluation.judge).is_file():
            raise UserInputError(f"evaluation.judge='{cfg.evaluation.judge}' does not exist; point it at the toy "
                                 f"world's judge (the package ships assets/toyworld/judge.pt).")
        from break_a_scene.toyworld.judges import load_judge

        check_weights_load("evaluation.judge", lambda: load_judge(cfg.evaluation.judge))
        return
    check_paper_weights(cfg.evaluation)
    for key in ("clip", "dino", "dreamsim", "detector"):
        if cfg.evaluation.get(key):
            check_weights_load(f"evaluation.{key}", lambda key=key: instantiate(cfg.evaluation[key], device="cpu"))


def _scorer(cfg: DictConfig, folder: str, photos: list[SceneTensors], tokens: list[str], class_names: list[str]):
    from break_a_scene.evaluation.scorers import ToyScorer, build_paper_scorer

    if cfg.evaluation.world == "toyworld":
        from break_a_scene.toyworld.judges import load_judge

        return ToyScorer(load_judge(cfg.evaluation.judge))
    gallery, offset = [photos], 0
    if cfg.benchmark.root:
        gallery, offset = [], None
        for i, entry in enumerate(read_index(cfg.benchmark.root)):
            if i == int(cfg.benchmark.scene_index):
                offset = sum(scene[0].masks.shape[0] for scene in gallery)
                gallery.append(photos)
            else:
                gallery.append(_scene_photos(Path(cfg.benchmark.root) / entry["name"], photos[0].image.shape[-1]))
    return build_paper_scorer(cfg.evaluation, photos, tokens, class_names, gallery, offset)


def _done_keys(rows: Path) -> set[tuple[str, int]]:
    if not rows.is_file():
        return set()
    return {(row["prompt"], int(row["sample_seed"])) for row in read_rows_file(rows)}


def _trial_tokens(cfg: DictConfig, pipeline_dir: Path, num_concepts: int) -> list[str]:
    """The concepts' tokens (without the background token, if any): the trained pipeline's, or before training
    the names training will give them."""
    from break_a_scene.training import token_names

    if (pipeline_dir / MANIFEST).is_file():
        return read_manifest(pipeline_dir)["tokens"][:num_concepts]
    return token_names(cfg, num_concepts)[:num_concepts]


def _picture_dir(trial: Path, folder: str) -> Path:
    """Where a composed library trial trains one of its pictures."""
    return trial / "pictures" / Path(folder).name


def _library_tokens(cfg: DictConfig, trial: Path, folders: list[str]) -> list[list[str]]:
    """Each picture's tokens, object by object: the joint run's token of each class name, or asset j's own tokens
    as composition names them (`<j:asset0>`)."""
    from break_a_scene.composition import composed_token
    from break_a_scene.toyworld.scenes import read_scene_json

    objects = [[obj.name for obj in read_scene_json(folder).objects] for folder in folders]
    if cfg.benchmark.library == "composed":
        return [[composed_token(j, t) for t in _trial_tokens(cfg, _picture_dir(trial, f) / "pipeline", len(names))]
                for j, (f, names) in enumerate(zip(folders, objects), 1)]
    pipeline_dir = trial / "pipeline"
    if (pipeline_dir / MANIFEST).is_file():
        manifest = read_manifest(pipeline_dir)
        tokens, class_names = manifest["tokens"], manifest.get("class_names") or []
    else:
        class_names = load_scene(folders=folders).class_names
        tokens = _trial_tokens(cfg, pipeline_dir, len(class_names))
    return [[tokens[class_names.index(name)] for name in names] for names in objects]


def _check_library(cfg: DictConfig) -> None:
    if cfg.evaluation.world != "toyworld":
        raise UserInputError("benchmark.pictures > 1 (a concept library) is evaluated in the toy world only: its "
                             "prompts across pictures need the judge's ground truth; set benchmark.pictures=1.")
    if cfg.benchmark.library not in ("joint", "composed"):
        raise UserInputError(f"benchmark.library={cfg.benchmark.library!r} is not one of joint, composed.")
    if cfg.benchmark.library == "composed" and cfg.method.phase2_trainable != "lora":
        raise UserInputError("benchmark.library=composed puts LoRA assets together; train them with variant=lora.")


def evaluate_trial(cfg: DictConfig, trial: Path) -> int:
    """Returns the number of rows written now (0 when the trial was already complete)."""
    pipeline_dir = trial / "pipeline"
    folders = list(cfg.data.scene.folders or [])
    if folders:
        from break_a_scene.evaluation.toy import toy_library_prompt_set
        from break_a_scene.toyworld.scenes import read_scene_json

        _check_library(cfg)
        by_picture = _library_tokens(cfg, trial, folders)
        tokens, class_names = list(dict.fromkeys(t for names in by_picture for t in names)), []
        prompts = toy_library_prompt_set([read_scene_json(f) for f in folders], by_picture,
                                         cfg.evaluation.prompts.per_subset, cfg.evaluation.prompts.seed)
        folder = "+".join(Path(f).name for f in folders)
    else:
        folder = cfg.data.scene.folder
        scene = load_scene(folder)
        tokens = _trial_tokens(cfg, pipeline_dir, scene.num_concepts)
        class_names = scene.class_names or []
        if cfg.evaluation.world != "toyworld" and len(class_names) != len(tokens):
            raise UserInputError(f"scene '{folder}' has no classes.txt with one class name per mask; the prompt "
                                 "similarity needs them.")
        prompts = trial_prompts(cfg, folder, tokens, class_names)
    ev = cfg.evaluation
    jobs = [(p, ev.seed + n * ev.num_images_per_prompt + i) for n, p in enumerate(prompts)
            for i in range(ev.num_images_per_prompt)]
    if not _todo(trial, jobs):  # complete, even when its pipeline was deleted or only the rows were kept
        return 0
    _check_scorer(cfg)
    with trial_lock(trial):
        return _train_and_score(cfg, trial, folder, tokens, class_names, jobs)


def _todo(trial: Path, jobs: list[tuple[EvalPrompt, int]]) -> list[tuple[EvalPrompt, int]]:
    """The (prompt, sample seed) jobs whose rows the trial's rows.csv does not hold yet."""
    done = _done_keys(trial / ROWS_FILE)
    return [(p, s) for p, s in jobs if (p.prompt, s) not in done]


def _train_pictures(cfg: DictConfig, trial: Path) -> list[Path]:
    """A composed library trial's assets: each picture trained alone (as its own one-scene run) into
    `<trial>/pictures/<scene>/`, unless its export is there already."""
    from break_a_scene.training import train

    assets = []
    for folder in cfg.data.scene.folders:
        out = _picture_dir(trial, folder)
        if not (out / "pipeline" / MANIFEST).is_file():
            log.info("training %s on %s alone", cfg.method_name, folder)
            alone = cfg.copy()
            with open_dict(alone):
                alone.data.scene.folder, alone.data.scene.folders = folder, None
                alone.paths.output_dir = str(out)
            train(alone)
        assets.append(out / "pipeline")
    return assets


def _trained_pipeline(cfg: DictConfig, trial: Path, folder: str, dtype: str):
    """Train what the trial has not trained yet; returns the pipeline to sample, its manifest and its family."""
    from break_a_scene.generate import export_family, load_trained_pipeline
    from break_a_scene.training import train

    if cfg.data.scene.folders and cfg.benchmark.library == "composed":
        from break_a_scene.composition import load_composed_pipeline

        assets = _train_pictures(cfg, trial)
        pipe = load_composed_pipeline([str(a) for a in assets], cfg.benchmark.compose_mode, None,
                                      cfg.evaluation.device, dtype)
        return pipe, read_manifest(assets[0]), export_family(assets[0])
    pipeline_dir = trial / "pipeline"
    if not (pipeline_dir / MANIFEST).is_file():
        log.info("training %s on %s", cfg.method_name, folder)
        train(cfg)
    pipe = load_trained_pipeline(pipeline_dir, cfg.evaluation.device, dtype)
    return pipe, read_manifest(pipeline_dir), export_family(pipeline_dir)


def _train_and_score(cfg: DictConfig, trial: Path, folder: str, tokens: list[str], class_names: list[str],
                     jobs: list[tuple[EvalPrompt, int]]) -> int:
    from break_a_scene.sampling import sample_images

    todo = _todo(trial, jobs)  # read again under the lock: a runner that held it may have finished them
    if not todo:
        return 0
    ev = cfg.evaluation
    rows_path = trial / ROWS_FILE
    dtype = ev.dtype if ev.dtype != "auto" else ("float16" if torch.cuda.is_available() else "float32")
    pipe, manifest, family = _trained_pipeline(cfg, trial, folder, dtype)
    resolution = manifest["resolution"]
    photos = [] if cfg.evaluation.world == "toyworld" else _scene_photos(folder, resolution)
    scorer = _scorer(cfg, folder, photos, tokens, class_names)
    image_dir = trial / "images"
    if ev.save_images:
        image_dir.mkdir(exist_ok=True)
    scene_name = Path(folder).name
    split = read_split(cfg.benchmark.root) if cfg.benchmark.root else ""  # a scene outside a benchmark: none
    numbers = {(p.prompt, s): n for n, (p, s) in enumerate(jobs)}
    written = 0
    bar = tqdm(total=len(todo), desc=f"{cfg.method_name}/{scene_name}", unit="img", disable=not ev.progress)
    for start in range(0, len(todo), ev.batch_size):
        chunk = todo[start : start + ev.batch_size]
        samples = list(sample_images(
            pipe, [p.prompt for p, _ in chunk], [s for _, s in chunk], resolution, ev.num_inference_steps,
            ev.guidance_scale, ev.batch_size, tokens if scorer.needs_attention else None,
            manifest.get("attention_resolution_divisor", 4), progress=False, family=family))
        images = torch.stack([(image_to_tensor(s.image, resolution) + 1) / 2 for s in samples])
        values = scorer(images, [p for p, _ in chunk], samples)
        rows = []
        for b, ((prompt, seed), sample) in enumerate(zip(chunk, samples)):
            name = ""
            if ev.save_images:
                name = f"images/{numbers[(prompt.prompt, seed)]:05d}.png"
                sample.image.save(trial / name)
            rows.append({"method": cfg.method_name, "split": split, "scene": scene_name, "train_seed": cfg.seed,
                         "prompt": prompt.prompt, "class_prompt": prompt.class_prompt,
                         "tokens": "|".join(tokens[j] for j in prompt.concepts), "concepts": len(prompt.concepts),
                         "sample_seed": seed, "image": name, **{k: v[b] for k, v in values.items()}})
        new_file = not rows_path.is_file()
        columns = list(rows[0]) if new_file else next(csv.reader(rows_path.open()))  # a file keeps its columns
        with rows_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
        written += len(rows)
        bar.update(len(rows))
    bar.close()
    summary = {name: float(metric.compute()) for name, metric in scorer.metrics.items()}
    exports = [trial / "pipeline", *(trial / "pictures").glob("*/pipeline")]  # a composed trial's: its assets
    export_mb = sum(p.stat().st_size for e in exports for p in e.rglob("*") if p.is_file()) / 2**20
    (trial / SUMMARY_FILE).write_text(json.dumps({"method": cfg.method_name, "scene": scene_name,
                                                  "train_seed": cfg.seed, "new_rows": written, **summary,
                                                  "export_mb": round(export_mb, 3)}, indent=1))
    return written


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_trial(cfg: DictConfig) -> Path:
    """Evaluate one trial. In a sweep, a failure is written to failed.json and, with
    evaluation.continue_on_error, the sweep goes on with its other trials. A single trial's user error is
    raised as it is (one line, exit status 2, nothing recorded); its crash is recorded, then raised."""
    trial = Path(cfg.paths.output_dir)
    if cfg.benchmark.root:
        with open_dict(cfg):
            if int(cfg.benchmark.pictures) > 1:
                cfg.data.scene.folder = None
                cfg.data.scene.folders = library_folders(cfg.benchmark.root, cfg.benchmark.scene_index,
                                                         cfg.benchmark.pictures)
            else:
                cfg.data.scene.folder = scene_folder(cfg.benchmark.root, cfg.benchmark.scene_index)
    sweep = _in_sweep()
    try:
        written = evaluate_trial(cfg, trial)
        (trial / FAILED_FILE).unlink(missing_ok=True)
        log.info("%s: %d new rows in %s", trial, written, trial / ROWS_FILE)
    except TrialBusy as busy:  # not this runner's to record: the holder's failed.json or rows stay as they are
        if not sweep:
            raise
        log.warning("skipped: %s", busy)
    except Exception as err:
        if isinstance(err, UserInputError) and not sweep:
            raise
        trial.mkdir(parents=True, exist_ok=True)
        (trial / FAILED_FILE).write_text(json.dumps({
            "method": cfg.method_name, "scene": str(cfg.data.scene.folders or cfg.data.scene.folder),
            "train_seed": cfg.seed,
            "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}, indent=1))
        log.error("trial %s failed: %s (recorded in %s)", trial, err, trial / FAILED_FILE)
        if not (sweep and cfg.evaluation.continue_on_error):
            raise
    return trial
