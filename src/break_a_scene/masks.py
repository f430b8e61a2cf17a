"""Masks from words: an open-vocabulary detector boxes each class name, a promptable segmenter turns the boxes
into masks, and the scene is written in the released layout (img.jpg, mask0.png, ..., classes.txt) with a
preview for the user to check before training.

Both models come from transformers and load offline (a local folder or the Hugging Face cache): a zero-shot
detector whose processor has `post_process_grounded_object_detection` with OWLv2's arguments (OWLv2, OWL-ViT),
and a SAM-style segmenter whose processor takes `input_boxes` and has `post_process_masks` (SAM, SAM-HQ).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.figures import masks_overlay
from break_a_scene.inputs import open_image
from break_a_scene.models import resolve_model_dir
from break_a_scene.scene import (
    CLASSES_FILE,
    IMAGE_NAMES,
    folder_image,
    load_scene,
    numbered_masks,
    read_classes_file,
)

log = logging.getLogger(__name__)

INSTANCE_POLICIES = ("best", "largest", "all")
PREVIEW = "preview.png"
REPORT = "masks.json"
_SAVED_MODEL = "a local folder that save_pretrained wrote (the model and its processor)"


def _check_instances(instances: str) -> None:
    if instances not in INSTANCE_POLICIES:
        raise UserInputError(f"masks.instances={instances!r} is not one of {', '.join(INSTANCE_POLICIES)}.")


@dataclass
class Detections:
    """One class name's boxes (K, 4: x0, y0, x1, y1 in pixels, inside the image) and scores (K,), best first."""

    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass
class FoundMask:
    class_name: str
    mask: np.ndarray  # (H, W) bool
    score: float  # the detector's score of the best box kept
    boxes: list[list[float]]  # the boxes the mask came from


def _load(name_or_path: str, setting: str, auto_model, device: str):
    from transformers import AutoProcessor

    from break_a_scene.devices import resolve_device

    root = resolve_model_dir(name_or_path, setting=setting, expected=_SAVED_MODEL)
    try:
        processor = AutoProcessor.from_pretrained(root, local_files_only=True)
        model = auto_model.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserInputError(f"{setting}='{name_or_path}' ({root}) could not be loaded: {err}") from None
    return model.to(resolve_device(device)).eval().requires_grad_(False), processor


class WordDetector:
    """Boxes for each class name, from one pass with every class name as a query (a box goes to the class it
    matches best, so two classes compete for an object rather than both taking it)."""

    def __init__(self, model, processor, query: str = "a photo of a {}", threshold: float = 0.1):
        if "{}" not in query:
            raise UserInputError(f"masks.detector.query={query!r} must contain {{}} where the class name goes.")
        self.model, self.processor, self.query, self.threshold = model, processor, query, threshold

    @classmethod
    def load(cls, name_or_path: str, device: str = "auto", **kwargs) -> "WordDetector":
        from transformers import AutoModelForZeroShotObjectDetection

        return cls(*_load(name_or_path, "masks.detector.name_or_path", AutoModelForZeroShotObjectDetection, device),
                   **kwargs)

    @torch.no_grad()
    def __call__(self, image: Image.Image, class_names: list[str]) -> list[Detections]:
        device = next(self.model.parameters()).device
        queries = [self.query.format(name) for name in class_names]
        inputs = self.processor(text=[queries], images=image, return_tensors="pt", truncation=True).to(device)
        outputs = self.model(**inputs)
        found = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(image.height, image.width)])[0]
        boxes, scores, labels = found["boxes"].cpu().float(), found["scores"].cpu().float(), found["labels"].cpu()
        limit = torch.tensor([image.width, image.height, image.width, image.height], dtype=boxes.dtype)
        boxes = torch.minimum(boxes.clamp(min=0), limit)  # OWLv2 boxes may reach into its square padding
        out = []
        for index in range(len(class_names)):
            mine = (labels == index).nonzero().flatten()
            mine = mine[scores[mine].argsort(descending=True)]
            out.append(Detections(boxes[mine], scores[mine]))
        return out


class BoxSegmenter:
    """A mask for each box (SAM prompted by boxes, one mask per box)."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @classmethod
    def load(cls, name_or_path: str, device: str = "auto") -> "BoxSegmenter":
        from transformers import AutoModelForMaskGeneration

        return cls(*_load(name_or_path, "masks.segmenter.name_or_path", AutoModelForMaskGeneration, device))

    @torch.no_grad()
    def __call__(self, image: Image.Image, boxes: torch.Tensor) -> torch.Tensor:
        """(K, 4) boxes -> (K, H, W) bool masks at the image's size."""
        device = next(self.model.parameters()).device
        inputs = self.processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt").to(device)
        outputs = self.model(**inputs, multimask_output=False)
        masks = self.processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                  inputs["reshaped_input_sizes"].cpu())[0]
        return masks[:, 0].bool()


def masks_from_words(image: Image.Image, class_names: list[str], detector: WordDetector, segmenter: BoxSegmenter,
                     instances: Literal["best", "largest", "all"] = "best",
                     source: str = "the image") -> list[FoundMask]:
    """One mask per class name. `instances`: `best` keeps the detector's highest-scoring box, `largest` the box
    whose mask is largest, `all` the union of every box's mask (every instance as one concept)."""
    _check_instances(instances)
    detections = detector(image, class_names)
    missing = [name for name, found in zip(class_names, detections) if len(found.scores) == 0]
    if missing:
        raise UserInputError(
            f"{', '.join(repr(m) for m in missing)} not found in {source} at masks.detector.threshold="
            f"{detector.threshold}: lower the threshold, name the object differently, or draw its mask yourself.")
    out = []
    for name, found in zip(class_names, detections):
        boxes = found.boxes[:1] if instances == "best" else found.boxes
        masks = segmenter(image, boxes)
        areas = masks.flatten(1).sum(1)
        if instances == "all":
            mask, kept = masks.any(0), list(range(len(boxes)))
        else:
            largest = int(areas.argmax())
            mask, kept = masks[largest], [largest]
        if not mask.any():
            raise UserInputError(f"{name!r} was boxed in {source} but masks.segmenter gave it an empty mask; draw "
                                 f"its mask yourself.")
        out.append(FoundMask(name, mask.numpy(), float(found.scores[kept].max()),
                             [[round(v, 1) for v in boxes[i].tolist()] for i in kept]))
    return out


def overlaps(found: list[FoundMask], at_least: float = 0.01) -> list[tuple[str, str, float]]:
    """Pairs of masks sharing pixels: (class a, class b, shared share of the smaller mask), at or above
    `at_least`. Both losses then count the shared pixels for both concepts."""
    pairs = []
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            shared = np.logical_and(a.mask, b.mask).sum() / min(a.mask.sum(), b.mask.sum())
            if shared >= at_least:
                pairs.append((a.class_name, b.class_name, round(float(shared), 3)))
    return pairs


def preview(image: Image.Image, found: list[FoundMask]) -> Image.Image:
    """The image with each mask outlined in its own colour and labelled `<index>: <class>`."""
    masks = np.stack([item.mask for item in found]).astype(np.float32)
    return masks_overlay(image, masks, [f"{i}: {item.class_name}" for i, item in enumerate(found)])


def read_classes(image_path: Path, classes: list[str] | None) -> list[str]:
    """The class names given, or those of classes.txt beside the image."""
    if classes:
        names = [str(c).strip() for c in classes]
    else:
        file = image_path.parent / CLASSES_FILE
        if not file.is_file():
            raise UserInputError(f"no class names: give masks.classes=[cup,saucer,...] or write {file}, one class "
                                 f"name a line.")
        names = read_classes_file(file)
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise UserInputError(f"class names {names} must be non-empty and distinct, one per concept.")
    return names


def scene_image(image: str | Path) -> Path:
    """A photo's path, or the image of a scene folder."""
    path = Path(image)
    if path.is_dir():
        found = folder_image(path)
        if found is None:
            raise UserInputError(f"folder '{path}' has no image: add one of {', '.join(IMAGE_NAMES)}.")
        return found
    if not path.is_file():
        raise UserInputError(f"image '{path}' does not exist.")
    return path


def _target_image_name(source: Path) -> str:
    """The released layout's img.jpg for a JPEG (copied byte for byte); other photos stay lossless as img.png."""
    return "img.jpg" if source.suffix.lower() in (".jpg", ".jpeg") else "img.png"


def check_scene_target(out_dir: Path, image_path: Path, class_names: list[str], overwrite: bool) -> None:
    """Refuse, before any model is loaded, a folder whose scene files the run would replace (unless
    `overwrite`), and one that would keep masks the new scene does not have (they would be read as concepts)."""
    if not out_dir.is_dir():
        return
    image_name = _target_image_name(image_path)
    stale = [path.name for number, path in numbered_masks(out_dir) if number >= len(class_names)]
    if stale:
        raise UserInputError(f"'{out_dir}' holds {', '.join(stale)}, which a scene of {len(class_names)} classes "
                             f"would read as more concepts; choose another folder or move them away.")
    if overwrite:
        return
    ours = [f"mask{i}.png" for i in range(len(class_names))] + [PREVIEW, REPORT]
    taken = [name for name in ours if (out_dir / name).exists()]
    taken += [name for name in IMAGE_NAMES if (out_dir / name).exists()
              and not (name == image_name and (out_dir / name).resolve() == image_path.resolve())]
    classes_file = out_dir / CLASSES_FILE
    if classes_file.is_file() and read_classes_file(classes_file) != class_names:
        taken.append(CLASSES_FILE)
    if taken:
        raise UserInputError(f"'{out_dir}' already holds {', '.join(taken)}; choose another folder, or add "
                             f"overwrite=true to replace them.")


def _png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_scene(out_dir: Path, image_path: Path, image: Image.Image, found: list[FoundMask],
                settings: dict) -> Path:
    """Write the scene: everything is made in a folder beside `out_dir`, checked by the trainer's own scene
    loader, and only then moved in, so a failure leaves nothing half-written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"mask{i}.png": _png_bytes(Image.fromarray(item.mask.astype(np.uint8) * 255))
             for i, item in enumerate(found)}
    files[CLASSES_FILE] = "".join(f"{item.class_name}\n" for item in found).encode()
    files[PREVIEW] = _png_bytes(preview(image, found))
    report = {"image": str(image_path), **settings,
              "masks": [{"class": f.class_name, "score": round(f.score, 4), "boxes": f.boxes,
                         "area": round(float(f.mask.mean()), 4)} for f in found],
              "overlaps": [{"classes": [a, b], "share_of_smaller": s} for a, b, s in overlaps(found)]}
    files[REPORT] = json.dumps(report, indent=1).encode()
    image_name = _target_image_name(image_path)
    staging = Path(tempfile.mkdtemp(prefix=".bas-masks-", dir=out_dir))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if image_name == "img.jpg":
            shutil.copyfile(image_path, staging / image_name)
        else:
            image.save(staging / image_name)
        load_scene(folder=str(staging))  # the trainer's checks: sizes, empty or full masks
        same_image = (out_dir / image_name).exists() and (out_dir / image_name).resolve() == image_path.resolve()
        for child in staging.iterdir():
            if not (child.name == image_name and same_image):
                os.replace(child, out_dir / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def make_scene(image: str | Path, class_names: list[str], out_dir: str | Path, detector: dict, segmenter: dict,
               instances: str = "best", device: str = "auto", overwrite: bool = False) -> list[FoundMask]:
    """From a photo and class names to a scene folder (bas-masks, and bas-train with data.scene.auto_masks).
    `detector` / `segmenter`: the settings of `masks.detector` / `masks.segmenter`."""
    image_path, out_dir = scene_image(image), Path(out_dir)
    picture = open_image(image_path, "image").convert("RGB")
    check_scene_target(out_dir, image_path, class_names, overwrite)
    _check_instances(instances)
    found = masks_from_words(picture, class_names, WordDetector.load(device=device, **detector),
                             BoxSegmenter.load(device=device, **segmenter), instances, source=f"'{image_path}'")
    for a, b, share in overlaps(found):
        log.warning("masks %r and %r overlap: %.0f%% of the smaller one; check %s", a, b, 100 * share,
                    out_dir / PREVIEW)
    write_scene(out_dir, image_path, picture, found,
                {"detector": dict(detector), "segmenter": dict(segmenter), "instances": instances})
    for index, item in enumerate(found):
        log.info("mask%d.png: %s (score %.2f, %.1f%% of the image)", index, item.class_name, item.score,
                 100 * item.mask.mean())
    return found
