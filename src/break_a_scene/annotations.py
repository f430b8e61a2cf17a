"""Scene folders as annotation tools export them, read into named masks per photo.

A scene folder without `mask<i>.png` files may hold instead:
- `labels.png`: one label map (L or palette PNG, the image's size): value 0 is background, every other value one
  concept; `classes.txt` line v names value v (without it the concepts are unnamed, in value order).
- one COCO JSON file (`images`, `annotations`, `categories`; CVAT's and Label Studio's COCO export): every category
  shown in an image is one concept, the union of its annotations there (polygons, or RLE, compressed or not); every
  annotated image listed is a photo of the scene.
- one LabelMe JSON file (`shapes`, `imagePath`; also what CVAT exports as LabelMe): every label is one concept, the
  union of its shapes (polygon, rectangle, circle).
Masks are drawn at the image's upright size (what a viewer shows), which the file must state as the image's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from break_a_scene.errors import UserInputError
from break_a_scene.inputs import open_image, read_json, read_lines

LABEL_MAP = "labels.png"
CLASSES_FILE = "classes.txt"


@dataclass
class AnnotatedPhoto:
    """One photo: its image file and, per concept, the class name (None: unnamed), the mask (float32, 0 or 1,
    the image's upright size) and where it came from (for messages)."""

    image: Path
    names: list[str | None]
    masks: list[np.ndarray]
    sources: list[str]


def annotation_file(folder: Path) -> Path | None:
    """The folder's label map or its one JSON annotation file; None when it has neither. Several JSON files
    are refused: which one holds the masks cannot be told."""
    label_map = folder / LABEL_MAP
    jsons = sorted(path for path in folder.glob("*.json") if not path.name.startswith("."))
    if label_map.is_file() and jsons:
        raise UserInputError(f"scene folder '{folder}' holds both {LABEL_MAP} and {jsons[0].name}; keep one source "
                             f"of masks.")
    if len(jsons) > 1:
        raise UserInputError(f"scene folder '{folder}' holds several JSON files ({', '.join(p.name for p in jsons)}); "
                             f"keep the one annotation file (COCO or LabelMe) of this scene.")
    return label_map if label_map.is_file() else (jsons[0] if jsons else None)


def read_annotations(folder: Path, image: Path | None) -> list[AnnotatedPhoto]:
    """The photos `annotation_file(folder)` describes (`image`: the folder's own image, which a label map
    belongs to)."""
    source = annotation_file(folder)
    if source is None:
        raise UserInputError(f"scene folder '{folder}' has no masks: add mask0.png, mask1.png, ... (white = concept), "
                             f"a {LABEL_MAP} label map, or a COCO or LabelMe JSON file.")
    if source.name == LABEL_MAP:
        if image is None:
            raise UserInputError(f"'{source}' is a label map but '{folder}' has no image (img.jpg or img.png) for it.")
        return [read_label_map(source, image, folder / CLASSES_FILE)]
    data = read_json(source, "annotation file")
    if isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
        return read_coco(source, data, folder)
    if isinstance(data, dict) and "shapes" in data:
        return [read_labelme(source, data, folder)]
    raise UserInputError(f"annotation file '{source}' is neither COCO (images, annotations, categories) nor LabelMe "
                         f"(shapes, imagePath) JSON.")


def read_label_map(path: Path, image: Path, classes: Path) -> AnnotatedPhoto:
    picture = open_image(path, "label map")
    if picture.mode not in ("L", "P", "I", "I;16", "1"):
        raise UserInputError(f"label map '{path}' is a {picture.mode} image; a label map has one channel (L or palette "
                             f"PNG), each pixel a concept number (0: background). Colour-coded maps: map each colour "
                             f"to a number first.")
    labels = np.asarray(picture).astype(np.int64)
    _check_size(path, labels.shape, image)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise UserInputError(f"label map '{path}' has no concept: every pixel is 0 (background).")
    names: list[str | None] = [None] * len(values)
    if classes.is_file():
        lines = read_lines(classes, "class names file")
        beyond = [v for v in values if v > len(lines)]
        if beyond:
            raise UserInputError(f"label map '{path}' has values {beyond} but '{classes}' names only values "
                                 f"1..{len(lines)} (line v names value v).")
        missing = [f"{lines[v - 1]} ({v})" for v in range(1, len(lines) + 1) if v not in values]
        if missing:
            raise UserInputError(f"'{classes}' names {', '.join(missing)}, which no pixel of '{path}' has.")
        names = [lines[v - 1] for v in values]
    masks = [(labels == v).astype(np.float32) for v in values]
    return AnnotatedPhoto(image, names, masks, [f"{path} (value {v})" for v in values])


def read_coco(path: Path, data: dict, folder: Path) -> list[AnnotatedPhoto]:
    categories = {c.get("id"): c.get("name") for c in _records(path, data, "categories")}
    by_image: dict = {}
    for number, annotation in enumerate(_records(path, data, "annotations")):
        if annotation.get("category_id") not in categories:
            raise UserInputError(f"'{path}': annotation {number} has category_id {annotation.get('category_id')!r}, "
                                 f"which no entry of categories has.")
        by_image.setdefault(annotation.get("image_id"), []).append((number, annotation))
    photos = []
    for entry in _records(path, data, "images"):
        if entry.get("id") not in by_image:
            continue  # listed but not annotated (CVAT lists every image of a task)
        image = _image_file(path, folder, entry.get("file_name"))
        size = (entry.get("height"), entry.get("width"))
        _check_size(path, size, image)
        names, masks = [], []
        for number, annotation in by_image[entry["id"]]:
            name = categories[annotation["category_id"]]
            mask = _coco_segmentation(path, number, annotation.get("segmentation"), size)
            if name in names:
                masks[names.index(name)] = np.maximum(masks[names.index(name)], mask)
            else:
                names.append(name)
                masks.append(mask)
        photos.append(AnnotatedPhoto(image, names, masks, [f"{path} ({entry.get('file_name')}: {n})" for n in names]))
    if not photos:
        raise UserInputError(f"COCO file '{path}' annotates none of its images.")
    return photos


def read_labelme(path: Path, data: dict, folder: Path) -> AnnotatedPhoto:
    image = _image_file(path, folder, data.get("imagePath"))
    size = (data.get("imageHeight"), data.get("imageWidth"))
    _check_size(path, size, image)
    names, masks = [], []
    for number, shape in enumerate(data["shapes"] or []):
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str) or not label.strip():
            raise UserInputError(f"'{path}': shape {number} has no label; give every shape its concept's name.")
        mask = _labelme_shape(path, number, shape, size)
        if label in names:
            masks[names.index(label)] = np.maximum(masks[names.index(label)], mask)
        else:
            names.append(label)
            masks.append(mask)
    if not names:
        raise UserInputError(f"LabelMe file '{path}' has no shapes.")
    return AnnotatedPhoto(image, names, masks, [f"{path} ({name})" for name in names])


def _records(path: Path, data: dict, key: str) -> list[dict]:
    records = data[key]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserInputError(f"COCO file '{path}': '{key}' must be a list of objects.")
    return records


def _image_file(path: Path, folder: Path, name) -> Path:
    """The image an annotation file names: relative to the scene folder, else by its file name alone (exports
    often keep the path the images had on the annotator's machine)."""
    if not isinstance(name, str) or not name:
        raise UserInputError(f"'{path}' names no image file (COCO: images[].file_name, LabelMe: imagePath).")
    for candidate in (folder / name, folder / Path(name.replace("\\", "/")).name):
        if candidate.is_file():
            return candidate
    raise UserInputError(f"'{path}' names image '{name}', which is not in '{folder}'; put the image next to it.")


def _check_size(path: Path, size: tuple, image: Path) -> None:
    height, width = size
    if not all(isinstance(v, int) and v > 0 for v in (height, width)):
        raise UserInputError(f"'{path}' does not state the size of image '{image.name}' (height and width).")
    upright = open_image(image, "image").size
    if (width, height) != upright:
        raise UserInputError(f"'{path}' draws on {width}x{height} but image '{image}' is {upright[0]}x{upright[1]} "
                             f"(upright, as its EXIF orientation says); annotate the image as a viewer shows it.")


def _canvas(size: tuple) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size[1], size[0]), 0)
    return canvas, ImageDraw.Draw(canvas)


def _points(path: Path, where: str, values, pairs: bool) -> list[tuple[float, float]]:
    """[[x, y], ...] (pairs) or [x0, y0, x1, y1, ...] as (x, y) tuples; one line naming the shape otherwise."""
    try:
        flat = [float(v) for point in values for v in point] if pairs else [float(v) for v in values]
    except (TypeError, ValueError):
        flat = []
    if not flat or len(flat) % 2:
        raise UserInputError(f"'{path}': {where} has malformed points (x, y pairs of numbers expected).")
    return list(zip(flat[::2], flat[1::2]))


def _coco_segmentation(path: Path, number: int, segmentation, size: tuple) -> np.ndarray:
    where = f"annotation {number}"
    if isinstance(segmentation, list) and segmentation:  # polygons
        mask = np.zeros(size, dtype=np.float32)
        for polygon in segmentation:
            points = _points(path, where, polygon, pairs=False)
            if len(points) < 3:
                raise UserInputError(f"'{path}': {where} has a polygon of {len(points)} points; a polygon needs 3.")
            mask = np.maximum(mask, pixel_centres_inside(points, size))
        return mask
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != list(size):
            raise UserInputError(f"'{path}': {where}'s RLE is {segmentation.get('size')} (height, width) but its image "
                                 f"is {list(size)}.")
        counts = segmentation["counts"]
        runs = rle_counts(counts) if isinstance(counts, str) else counts
        return rle_decode(path, where, runs, size)
    raise UserInputError(f"'{path}': {where} has no segmentation (polygons or RLE); a box alone is not a mask.")


def pixel_centres_inside(points: list[tuple[float, float]], size: tuple) -> np.ndarray:
    """COCO's polygons are in continuous coordinates: a pixel is inside when its centre is (even-odd rule), as
    pycocotools draws them (PIL's fill would add the edge pixels: 17 x 11 for a 16 x 10 box)."""
    height, width = size
    xs, ys = np.array([x for x, _ in points]), np.array([y for _, y in points])
    x0, x1 = max(int(np.floor(xs.min())), 0), min(int(np.ceil(xs.max())), width)
    y0, y1 = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), height)
    mask = np.zeros(size, dtype=np.float32)
    if x0 >= x1 or y0 >= y1:
        return mask
    px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    inside = np.zeros(px.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(points, points[1:] + points[:1]):
        if ay == by:
            continue
        crosses = (ay > py) != (by > py)
        inside ^= crosses & (px < ax + (py - ay) * (bx - ax) / (by - ay))
    mask[y0:y1, x0:x1] = inside
    return mask


def rle_counts(text: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths: each number in 5-bit groups (chars from '0'), low groups
    first, 0x20 set while more follow, 0x10 of the last group its sign; from the third on, a number is stored
    as its difference to the one two before it."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise UserInputError(f"compressed RLE '{text[:40]}' ends inside a number.")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_decode(path: Path, where: str, runs, size: tuple) -> np.ndarray:
    """Run lengths (zeros first, then ones, alternating) over the pixels in column order -> (H, W) mask."""
    if not isinstance(runs, list) or not all(isinstance(r, int) and r >= 0 for r in runs):
        raise UserInputError(f"'{path}': {where}'s RLE counts are not non-negative whole numbers.")
    height, width = size
    if sum(runs) != height * width:
        raise UserInputError(f"'{path}': {where}'s RLE covers {sum(runs)} pixels but its image has {height * width}.")
    values = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.float32)
    return values.reshape(width, height).T.copy()


def _labelme_shape(path: Path, number: int, shape: dict, size: tuple) -> np.ndarray:
    """A shape drawn as LabelMe draws it (its points as pixel coordinates, edges included)."""
    kind = shape.get("shape_type") or "polygon"
    where = f"shape {number} ({shape.get('label')}, {kind})"
    points = _points(path, where, shape.get("points"), pairs=True)
    canvas, draw = _canvas(size)
    if kind == "polygon" and len(points) >= 3:
        draw.polygon(points, fill=255)
    elif kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=255)
    elif kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        r = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif kind in ("polygon", "rectangle", "circle"):
        raise UserInputError(f"'{path}': {where} has {len(points)} points, too few or too many for a {kind}.")
    else:
        raise UserInputError(f"'{path}': {where} is not an area this reads (polygon, rectangle, circle); redraw it "
                             f"as a polygon.")
    return (np.asarray(canvas) > 0).astype(np.float32)
