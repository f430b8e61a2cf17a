"""Input scenes: one image and N masks, loaded, checked and brought to the model's resolution.

Two ways in: the released code's folder layout (`img.jpg` + `mask0.png`, `mask1.png`, ..., with an optional
`classes.txt`, one class name per mask) or an explicit image path and list of mask paths. Images and masks are
turned upright as a viewer shows them (EXIF orientation) before anything else. Masks may be soft (any grey
level), L, 1-bit, RGB or RGBA: see `read_mask` for which channel is read.

Several photos of one scene: a folder without an image of its own whose subfolders are photos in the layout
above, `mask<i>.png` being concept i wherever it appears (a photo may leave numbers out: that concept is not
in it), and `classes.txt` at the top (`load_scene` returns `ScenePhotos`).

Masks as annotation tools export them, in place of the `mask<i>.png` files: a `labels.png` label map, a COCO or a
LabelMe JSON file (`annotations`); a COCO file of several images is several photos, a name one concept in all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from break_a_scene.annotations import CLASSES_FILE, LABEL_MAP, annotation_file, read_annotations
from break_a_scene.errors import UserInputError
from break_a_scene.inputs import open_image, read_lines

log = logging.getLogger(__name__)

IMAGE_NAMES = ("img.jpg", "img.jpeg", "img.png")
_MASK_FILE = re.compile(r"^mask(\d+)\.png$")
_ON = 0.5  # a mask pixel counts as inside when above this
MASK_CHANNELS = ("auto", "alpha", "grey", "red", "green", "blue")


@dataclass(frozen=True)
class SceneKeys:
    """The settings that name a scene's inputs, for the messages about them: training's by default, bas-edit's
    own for its image and region mask."""

    image: str = "data.scene.image"
    masks: str = "data.scene.masks"
    mask_channel: str = "data.mask_channel"
    whole_image: str = "Use data.background_token=true for a background concept instead."


TRAINING_KEYS = SceneKeys()


@dataclass
class Scene:
    """An input image (RGB) and its masks (float32 in [0, 1], each the image's size), checked."""

    image: Image.Image
    masks: list[np.ndarray]
    mask_paths: list[str]
    class_names: list[str] | None
    source: str

    # concept index of each mask, for a photo of `ScenePhotos`; None: mask i is concept i
    concepts: list[int] | None = None
    keys: SceneKeys = TRAINING_KEYS

    @property
    def num_concepts(self) -> int:
        return len(self.masks)


@dataclass
class ScenePhotos:
    """Several photos of one scene; photo p shows the concepts `photos[p].concepts`, each at least once."""

    photos: list[Scene]
    num_concepts: int
    class_names: list[str] | None
    source: str


@dataclass
class SceneTensors:
    """A scene (or one photo of it) at the model resolution: image (3, R, R) in [-1, 1], masks (N, R, R) in
    [0, 1], and which of the N concepts the photo shows (`present`, (N,) bool; an absent concept's mask is 0)."""

    image: torch.Tensor
    masks: torch.Tensor
    present: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.present is None:
            self.present = torch.ones(self.masks.shape[0], dtype=torch.bool)


def mask_box(mask: torch.Tensor) -> list[int]:
    """(H, W) mask (> 0.5 counts; a bool mask as is) -> its bounding box [x0, y0, x1, y1], end-exclusive (a
    detector's box): what re-placement moves and what identity metrics crop."""
    inside = mask > 0.5
    rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def read_mask(image: Image.Image, channel: str = "auto",
              setting: str = TRAINING_KEYS.mask_channel) -> tuple[np.ndarray, str]:
    """The mask in [0, 1] and which channel it was read from.

    `auto`: the alpha channel where the alpha varies (a cut-out); otherwise the grey level of a grey image and
    channel 0 (red) of a colour one, as the released code reads its own RGBA example masks, whose alpha is
    opaque. `alpha`, `grey` (luminance), `red`, `green`, `blue` force one.
    """
    if channel not in MASK_CHANNELS:
        raise UserInputError(f"{setting}={channel!r} is not one of {', '.join(MASK_CHANNELS)}.")
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257.0).round().astype(np.uint8))
    if channel == "auto":
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        if has_alpha:
            low, high = image.convert("RGBA").getchannel("A").getextrema()
            if low != high:
                channel = "alpha"
        if channel == "auto":
            channel = "grey" if image.mode in ("1", "L", "LA", "I", "F") else "red"
    if channel == "alpha":
        picture = image.convert("RGBA").getchannel("A")
    elif channel == "grey":
        picture = image.convert("L")
    else:
        picture = image.convert("RGB").getchannel("RGB"[("red", "green", "blue").index(channel)])
    return np.asarray(picture, dtype=np.float32) / 255.0, channel


def folder_image(folder: Path) -> Path | None:
    return next((folder / name for name in IMAGE_NAMES if (folder / name).is_file()), None)


def numbered_masks(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(match.group(1)), path) for path in folder.iterdir() if (match := _MASK_FILE.match(path.name)))


def read_classes_file(file: Path) -> list[str]:
    """The class names of a classes.txt, one a line."""
    return read_lines(file, "class names file")


def _read_classes(folder: Path) -> list[str] | None:
    classes_file = folder / CLASSES_FILE
    return read_classes_file(classes_file) if classes_file.is_file() else None


def photo_folders(folder: Path) -> list[Path]:
    """The photos of a several-photo scene folder (subfolders holding an image), in name order; [] when the
    folder is one photo. A folder that is both (an image of its own and photo subfolders) is refused: which
    the user meant cannot be told."""
    subfolders = sorted(sub for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith("."))
    photos = [sub for sub in subfolders if folder_image(sub) is not None]
    own = folder_image(folder)
    if own is not None and photos:
        raise UserInputError(
            f"scene folder '{folder}' holds both an image of its own ({own.name}) and photo subfolders "
            f"({', '.join(sub.name for sub in photos)}); a scene is one photo or several. Move {own.name} and its "
            f"masks into a subfolder of their own to train on all the photos, or move the subfolders out."
        )
    return [] if own is not None else photos


def _folder_files(folder: Path) -> tuple[Path, list[Path], list[str] | None]:
    if not folder.is_dir():
        raise UserInputError(f"scene folder '{folder}' does not exist. Set data.scene.folder to a folder with "
                             f"img.jpg and mask0.png, mask1.png, ...")
    image = folder_image(folder)
    if image is None:
        raise UserInputError(f"scene folder '{folder}' has no image: add one of {', '.join(IMAGE_NAMES)} (or, for "
                             f"several photos of the scene, one subfolder per photo holding its image and masks).")
    numbered = numbered_masks(folder)
    if not numbered:
        raise UserInputError(f"scene folder '{folder}' has no masks: add mask0.png, mask1.png, ... (white = concept), "
                             f"a {LABEL_MAP} label map, or a COCO or LabelMe JSON file.")
    expected = list(range(len(numbered)))
    if [i for i, _ in numbered] != expected:
        raise UserInputError(
            f"scene folder '{folder}' has masks numbered {[i for i, _ in numbered]}; number them "
            f"0..{len(numbered) - 1} without gaps."
        )
    return image, [path for _, path in numbered], _read_classes(folder)


def _read_photo(image_path: Path, mask_paths: list[Path], mask_channel: str,
                keys: SceneKeys = TRAINING_KEYS) -> tuple[Image.Image, list[np.ndarray]]:
    """An image and its masks, upright, each mask checked: the image's size, neither empty nor full."""
    picture = open_image(image_path, "image", f"Check {keys.image}.").convert("RGB")
    arrays = []
    for path in mask_paths:
        mask, channel = read_mask(open_image(path, "mask", f"Check {keys.masks}."), mask_channel, keys.mask_channel)
        if mask.shape != (picture.height, picture.width):
            raise UserInputError(
                f"mask '{path}' is {mask.shape[1]}x{mask.shape[0]} but image '{image_path}' is "
                f"{picture.width}x{picture.height} (both upright, as their EXIF orientation says); masks must have "
                f"the image's size. Resize the mask."
            )
        read_from = f" (read from its {channel} channel; {keys.mask_channel} reads another)"
        _check_coverage(mask, f"mask '{path}'", keys, after=read_from)
        arrays.append(mask)
    return picture, arrays


def _load_photos(folder: Path, photos: list[Path], class_names: list[str] | None, mask_channel: str) -> ScenePhotos:
    """Several photos of one scene: mask<i>.png in any photo is concept i; every concept in some photo."""
    class_names = class_names if class_names is not None else _read_classes(folder)
    loaded = []
    for photo in photos:
        numbered = numbered_masks(photo)
        if not numbered:
            raise UserInputError(f"photo folder '{photo}' has no masks: add mask<i>.png for each concept i it shows "
                                 f"(the same i as in the other photos).")
        if (photo / CLASSES_FILE).is_file():
            raise UserInputError(f"'{photo / CLASSES_FILE}': a several-photo scene names its concepts once, in "
                                 f"'{folder / CLASSES_FILE}'; move it there.")
        image_path = folder_image(photo)
        picture, arrays = _read_photo(image_path, [path for _, path in numbered], mask_channel)
        loaded.append(Scene(picture, arrays, [str(path) for _, path in numbered], None, str(photo),
                            concepts=[i for i, _ in numbered]))
    shown = sorted({i for photo in loaded for i in photo.concepts})
    count = len(class_names) if class_names is not None else shown[-1] + 1
    beyond = [i for i in shown if i >= count]
    if beyond:
        raise UserInputError(f"the photos of '{folder}' have masks numbered {beyond} but {CLASSES_FILE} (or "
                             f"data.scene.class_names) names {count} concepts; give one class name per concept.")
    unseen = [i for i in range(count) if i not in shown]
    if unseen:
        raise UserInputError(f"concepts {unseen} of '{folder}' are in none of its photos: add mask<i>.png for "
                             f"them to a photo, or number the masks without gaps.")
    for photo in loaded:
        photo.class_names = list(class_names) if class_names else None
    return ScenePhotos(loaded, count, list(class_names) if class_names else None, str(folder))


def load_scene(
    folder: str | None = None,
    image: str | None = None,
    masks: list[str] | None = None,
    class_names: list[str] | None = None,
    mask_channel: str = "auto",
    auto_masks: bool = False,
    keys: SceneKeys = TRAINING_KEYS,
    folders: list[str] | None = None,
) -> Scene | ScenePhotos:
    """Load and check a scene from a folder (one photo, or several: `ScenePhotos`), or from an image path
    and mask paths (`mask_channel`: see `read_mask`), or a concept library from several scene folders
    (`folders`: `load_library`). `auto_masks` (data.scene.auto_masks) is bas-train's: it makes the masks into
    its run's scene/ folder and loads that; a config that says so, loaded elsewhere, is pointed there. `keys`:
    the settings the messages name."""
    if folders:
        if folder is not None or image is not None or class_names is not None or auto_masks:
            raise UserInputError("data.scene.folders (a concept library) reads each folder's own masks and class "
                                 "names; set data.scene.folder, image, class_names and auto_masks to null/false.")
        return load_library(list(folders), mask_channel)
    if (folder is None) == (image is None):
        raise UserInputError("give either data.scene.folder, or data.scene.image with data.scene.masks, not both.")
    if folder is not None:
        root = Path(folder)
        photos = photo_folders(root) if root.is_dir() else []
        if photos:
            return _load_photos(root, photos, class_names, mask_channel)
        if auto_masks and root.is_dir() and not numbered_masks(root):
            raise UserInputError(f"scene folder '{root}' has no masks: this config has data.scene.auto_masks=true, "
                                 f"so its masks are in the run's scene/ folder (the export's manifest names it); load "
                                 f"that folder.")
        if root.is_dir() and not numbered_masks(root) and annotation_file(root) is not None:
            return _load_annotated(root, class_names, keys)
        image_path, mask_paths, folder_classes = _folder_files(root)
        class_names = class_names if class_names is not None else folder_classes
        source = str(Path(folder))
    else:
        if not masks:
            raise UserInputError("data.scene.image is set but data.scene.masks is empty: list one mask per concept.")
        image_path, mask_paths, source = Path(image), [Path(m) for m in masks], str(Path(image))
    picture, arrays = _read_photo(image_path, mask_paths, mask_channel, keys)
    if class_names is not None and len(class_names) != len(arrays):
        raise UserInputError(
            f"{len(class_names)} class names for {len(arrays)} masks in '{source}'; give one per mask "
            f"(data.scene.class_names or {CLASSES_FILE})."
        )
    return Scene(picture, arrays, [str(p) for p in mask_paths], list(class_names) if class_names else None, source,
                 keys=keys)


def _load_annotated(folder: Path, class_names: list[str] | None, keys: SceneKeys) -> Scene | ScenePhotos:
    """A folder described by a label map, COCO or LabelMe file (`annotations`): one photo, or several (a COCO file
    of several images) whose concepts are one when their names are."""
    annotated = read_annotations(folder, folder_image(folder))
    photos = []
    for photo in annotated:
        names = photo.names
        if class_names is not None:
            if any(name is not None for name in names) or len(class_names) != len(names):
                raise UserInputError(f"'{folder}': its annotation file names its {len(names)} concepts; leave "
                                     f"data.scene.class_names unset (or give one per label-map value, without "
                                     f"{CLASSES_FILE}).")
            names = list(class_names)
        picture = open_image(photo.image, "image", f"Check the annotation file in '{folder}'.").convert("RGB")
        for mask, source in zip(photo.masks, photo.sources):
            _check_coverage(mask, f"the mask of {source}", keys)
        named = None if any(name is None for name in names) else list(names)
        photos.append(Scene(picture, photo.masks, photo.sources, named, str(photo.image), keys=keys))
    if len(photos) == 1:
        photos[0].source = str(folder)
        return photos[0]
    return combine_by_name(photos, str(folder))


def load_library(folders: list[str], mask_channel: str = "auto") -> ScenePhotos:
    """Several scene folders (each one photo or several, in any mask layout `load_scene` reads) as one scene whose
    photos are all of theirs: a concept is its class name, one token however many folders show it."""
    repeated = sorted({folder for folder in folders if folders.count(folder) > 1})
    if repeated:
        raise UserInputError(f"data.scene.folders lists {', '.join(repeated)} more than once; list each folder once.")
    photos = []
    for folder in folders:
        scene = load_scene(folder=folder, mask_channel=mask_channel)
        if isinstance(scene, Scene):
            photos.append(scene)
            continue
        if scene.class_names is None:
            raise UserInputError(f"'{folder}' does not name its concepts, so they cannot be matched with the other "
                                 f"folders'; add {CLASSES_FILE} (one class name per concept).")
        for photo in scene.photos:  # each photo's concepts by name, matched across folders below
            photo.class_names = [scene.class_names[i] for i in photo.concepts]
            photos.append(photo)
    return combine_by_name(photos, " + ".join(folders))


def combine_by_name(photos: list[Scene], source: str) -> ScenePhotos:
    """Photos whose masks are named (each `Scene.class_names`) as one several-photo scene: a name is one concept
    wherever it appears, numbered in the order names first appear."""
    names: list[str] = []
    for photo in photos:
        if photo.class_names is None:
            raise UserInputError(f"'{photo.source}' does not name its concepts, so they cannot be matched with the "
                                 f"other photos'; add {CLASSES_FILE} (one class name per mask).")
        if len(set(photo.class_names)) != len(photo.class_names):
            raise UserInputError(f"'{photo.source}' names two of its masks alike ({', '.join(photo.class_names)}); "
                                 f"a name is one concept: give each its own.")
        names += [name for name in photo.class_names if name not in names]
    for photo in photos:
        photo.concepts = [names.index(name) for name in photo.class_names]
        photo.class_names = list(names)
    return ScenePhotos(photos, len(names), names, source)


def _check_coverage(mask: np.ndarray, what: str, keys: SceneKeys, after: str = "") -> None:
    inside = mask > _ON
    if not inside.any():
        raise UserInputError(f"{what} is empty{after}: no pixel is above {_ON}. Draw the concept in white.")
    if inside.all():
        raise UserInputError(
            f"{what} covers the whole image{after}; a mask must leave some of it out. {keys.whole_image}"
        )


def _center_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def square_resize(image: Image.Image, resolution: int, resample: Image.Resampling) -> Image.Image:
    return image.crop(_center_square(image.width, image.height)).resize((resolution, resolution), resample)


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Center-crop, resize and scale an image to (3, R, R) in [-1, 1]."""
    picture = np.asarray(square_resize(image.convert("RGB"), resolution, Image.Resampling.BICUBIC), dtype=np.float32)
    return torch.from_numpy(picture / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def prepare_scene(scene: Scene, resolution: int, background: bool = False, num_concepts: int | None = None
                  ) -> SceneTensors:
    """Center-crop image and masks together to a square and resize to `resolution`.

    With `background`, one more mask is added: the complement of the union of the others (the paper's
    background token; the released code has none). A photo of `ScenePhotos` (its `concepts` set) gets
    `num_concepts` masks, zero for the concepts it does not show.
    """
    image = image_to_tensor(scene.image, resolution)
    left, top, right, bottom = _center_square(scene.image.width, scene.image.height)
    masks = []
    for path, mask in zip(scene.mask_paths, scene.masks):
        inside = mask > _ON
        kept = inside[top:bottom, left:right].sum() / inside.sum()
        if kept < 0.5:
            where = f"{scene.image.width}x{scene.image.height} -> the centre {right - left}x{bottom - top}"
            message = (f"mask '{path}' keeps {kept:.0%} of its concept after the square crop ({where}); crop or "
                       f"pad the image to a square yourself so that the concept is inside it")
            if kept == 0:
                raise UserInputError(message + ".")
            log.warning(message + ".")
        small = square_resize(Image.fromarray(mask, mode="F"), resolution, Image.Resampling.BILINEAR)
        array = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
        _check_coverage(array, f"mask '{path}'", scene.keys,
                        after=f" after center-cropping and resizing to {resolution}px")
        masks.append(torch.from_numpy(array))
    stacked = torch.stack(masks)
    present = torch.ones(len(masks), dtype=torch.bool)
    if scene.concepts is not None:
        count = num_concepts if num_concepts is not None else max(scene.concepts) + 1
        placed = torch.zeros(count, resolution, resolution)
        placed[scene.concepts] = stacked
        present = torch.zeros(count, dtype=torch.bool)
        present[scene.concepts] = True
        stacked = placed
    if background:
        stacked = torch.cat([stacked, 1.0 - stacked.amax(dim=0, keepdim=True)])
        present = torch.cat([present, torch.ones(1, dtype=torch.bool)])
    return SceneTensors(image=image, masks=stacked, present=present)


def prepare_photos(scene: Scene | ScenePhotos, resolution: int, background: bool = False) -> list[SceneTensors]:
    """Every photo of a scene at the model resolution (`prepare_scene`), each with all the scene's concepts."""
    if isinstance(scene, Scene):
        return [prepare_scene(scene, resolution, background)]
    return [prepare_scene(photo, resolution, background, scene.num_concepts) for photo in scene.photos]


def scene_warnings(scene: SceneTensors, names: list[str], attention_side: int) -> list[str]:
    """What is legal but likely a mistake: identical masks, masks overlapping by more than half of the
    smaller one, and concepts smaller than one cell of the attention loss's grid (among the concepts the
    photo shows)."""
    inside = scene.masks > _ON
    areas = inside.flatten(1).sum(dim=1)
    cell = (scene.masks.shape[-1] / attention_side) ** 2
    warnings = []
    for i, name in enumerate(names):
        if not scene.present[i]:
            continue
        if areas[i] < cell:
            warnings.append(f"{name} covers {int(areas[i])} px, less than one {attention_side}x{attention_side} "
                            f"attention cell ({cell:.0f} px): its attention loss sees almost nothing of it.")
        for j in range(i + 1, len(names)):
            if not scene.present[j]:
                continue
            overlap = int((inside[i] & inside[j]).sum())
            if torch.equal(inside[i], inside[j]):
                warnings.append(f"the masks of {name} and {names[j]} are identical: both tokens learn one concept.")
            elif overlap > 0.5 * min(int(areas[i]), int(areas[j])):
                warnings.append(f"the masks of {name} and {names[j]} overlap by {overlap} px, more than half of the "
                                f"smaller one: the two tokens will share what they learn.")
    return warnings
