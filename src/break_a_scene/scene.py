"""Input scenes: one image and N masks, loaded, checked and brought to the model's resolution.

Two ways in: the released code's folder layout (`img.jpg` + `mask0.png`, `mask1.png`, ..., with an optional
`classes.txt`, one class name per mask) or an explicit image path and list of mask paths. Images and masks are
turned upright as a viewer shows them (EXIF orientation) before anything else. Masks may be soft (any grey
level), L, 1-bit, RGB or RGBA: see `read_mask` for which channel is read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from break_a_scene.errors import UserInputError

log = logging.getLogger(__name__)

IMAGE_NAMES = ("img.jpg", "img.jpeg", "img.png")
CLASSES_FILE = "classes.txt"
_MASK_FILE = re.compile(r"^mask(\d+)\.png$")
_ON = 0.5  # a mask pixel counts as inside when above this
MASK_CHANNELS = ("auto", "alpha", "grey", "red", "green", "blue")


@dataclass
class Scene:
    """An input image (RGB) and its masks (float32 in [0, 1], each the image's size), checked."""

    image: Image.Image
    masks: list[np.ndarray]
    mask_paths: list[str]
    class_names: list[str] | None
    source: str

    @property
    def num_concepts(self) -> int:
        return len(self.masks)


@dataclass
class SceneTensors:
    """A scene at the model resolution: image (3, R, R) in [-1, 1], masks (N, R, R) in [0, 1]."""

    image: torch.Tensor
    masks: torch.Tensor


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise UserInputError(f"{what} '{path}' does not exist. Check data.scene.* in your config.")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise UserInputError(f"{what} '{path}' is not a readable image ({err}).") from None
    return ImageOps.exif_transpose(image)


def read_mask(image: Image.Image, channel: str = "auto") -> tuple[np.ndarray, str]:
    """The mask in [0, 1] and which channel it was read from.

    `auto`: the alpha channel where the alpha varies (a cut-out); otherwise the grey level of a grey image and
    channel 0 (red) of a colour one, as the released code reads its own RGBA example masks, whose alpha is
    opaque. `alpha`, `grey` (luminance), `red`, `green`, `blue` force one.
    """
    if channel not in MASK_CHANNELS:
        raise UserInputError(f"data.mask_channel={channel!r} is not one of {', '.join(MASK_CHANNELS)}.")
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


def _folder_files(folder: Path) -> tuple[Path, list[Path], list[str] | None]:
    if not folder.is_dir():
        raise UserInputError(f"scene folder '{folder}' does not exist. Set data.scene.folder to a folder with "
                             f"img.jpg and mask0.png, mask1.png, ...")
    image = next((folder / name for name in IMAGE_NAMES if (folder / name).is_file()), None)
    if image is None:
        raise UserInputError(f"scene folder '{folder}' has no image: add one of {', '.join(IMAGE_NAMES)}.")
    numbered = sorted(
        (int(match.group(1)), path) for path in folder.iterdir() if (match := _MASK_FILE.match(path.name))
    )
    if not numbered:
        raise UserInputError(f"scene folder '{folder}' has no masks: add mask0.png, mask1.png, ... (white = concept).")
    expected = list(range(len(numbered)))
    if [i for i, _ in numbered] != expected:
        raise UserInputError(
            f"scene folder '{folder}' has masks numbered {[i for i, _ in numbered]}; number them "
            f"0..{len(numbered) - 1} without gaps."
        )
    classes_file = folder / CLASSES_FILE
    classes = None
    if classes_file.is_file():
        classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    return image, [path for _, path in numbered], classes


def load_scene(
    folder: str | None = None,
    image: str | None = None,
    masks: list[str] | None = None,
    class_names: list[str] | None = None,
    mask_channel: str = "auto",
    auto_masks: bool = False,
) -> Scene:
    """Load and check a scene from a folder, or from an image path and mask paths (`mask_channel`: see
    `read_mask`). `auto_masks` (data.scene.auto_masks) is bas-train's: it makes the masks into its run's
    scene/ folder and loads that; a config that says so, loaded elsewhere, is pointed there."""
    if (folder is None) == (image is None):
        raise UserInputError("give either data.scene.folder, or data.scene.image with data.scene.masks, not both.")
    if folder is not None:
        try:
            image_path, mask_paths, folder_classes = _folder_files(Path(folder))
        except UserInputError as err:
            if auto_masks and "has no masks" in str(err):
                raise UserInputError(f"{err} This config has data.scene.auto_masks=true: its masks are in the run's "
                                     f"scene/ folder (the export's manifest names it); load that folder.") from None
            raise
        class_names = class_names if class_names is not None else folder_classes
        source = str(Path(folder))
    else:
        if not masks:
            raise UserInputError("data.scene.image is set but data.scene.masks is empty: list one mask per concept.")
        image_path, mask_paths, source = Path(image), [Path(m) for m in masks], str(Path(image))
    picture = _open_image(image_path, "image").convert("RGB")
    arrays = []
    for path in mask_paths:
        mask, channel = read_mask(_open_image(path, "mask"), mask_channel)
        if mask.shape != (picture.height, picture.width):
            raise UserInputError(
                f"mask '{path}' is {mask.shape[1]}x{mask.shape[0]} but image '{image_path}' is "
                f"{picture.width}x{picture.height} (both upright, as their EXIF orientation says); masks must have "
                f"the image's size. Resize the mask."
            )
        read_from = f" (read from its {channel} channel; data.mask_channel reads another)"
        _check_coverage(mask, f"mask '{path}'", after=read_from)
        arrays.append(mask)
    if class_names is not None and len(class_names) != len(arrays):
        raise UserInputError(
            f"{len(class_names)} class names for {len(arrays)} masks in '{source}'; give one per mask "
            f"(data.scene.class_names or {CLASSES_FILE})."
        )
    return Scene(picture, arrays, [str(p) for p in mask_paths], list(class_names) if class_names else None, source)


def _check_coverage(mask: np.ndarray, what: str, after: str = "") -> None:
    inside = mask > _ON
    if not inside.any():
        raise UserInputError(f"{what} is empty{after}: no pixel is above {_ON}. Draw the concept in white.")
    if inside.all():
        raise UserInputError(
            f"{what} covers the whole image{after}; a concept mask must leave some background. Use "
            f"data.background_token=true for a background concept instead."
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


def prepare_scene(scene: Scene, resolution: int, background: bool = False) -> SceneTensors:
    """Center-crop image and masks together to a square and resize to `resolution`.

    With `background`, one more mask is added: the complement of the union of the others (the paper's
    background token; the released code has none).
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
        _check_coverage(array, f"mask '{path}'", after=f" after center-cropping and resizing to {resolution}px")
        masks.append(torch.from_numpy(array))
    stacked = torch.stack(masks)
    if background:
        stacked = torch.cat([stacked, 1.0 - stacked.amax(dim=0, keepdim=True)])
    return SceneTensors(image=image, masks=stacked)


def scene_warnings(scene: SceneTensors, names: list[str], attention_side: int) -> list[str]:
    """What is legal but likely a mistake: identical masks, masks overlapping by more than half of the
    smaller one, and concepts smaller than one cell of the attention loss's grid."""
    inside = scene.masks > _ON
    areas = inside.flatten(1).sum(dim=1)
    cell = (scene.masks.shape[-1] / attention_side) ** 2
    warnings = []
    for i, name in enumerate(names):
        if areas[i] < cell:
            warnings.append(f"{name} covers {int(areas[i])} px, less than one {attention_side}x{attention_side} "
                            f"attention cell ({cell:.0f} px): its attention loss sees almost nothing of it.")
        for j in range(i + 1, len(names)):
            overlap = int((inside[i] & inside[j]).sum())
            if torch.equal(inside[i], inside[j]):
                warnings.append(f"the masks of {name} and {names[j]} are identical: both tokens learn one concept.")
            elif overlap > 0.5 * min(int(areas[i]), int(areas[j])):
                warnings.append(f"the masks of {name} and {names[j]} overlap by {overlap} px, more than half of the "
                                f"smaller one: the two tokens will share what they learn.")
    return warnings
