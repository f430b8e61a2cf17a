"""Rebuild the shipped example scene: scikit-image's `coffee` photo (CC0, Rachel Michetti) with hand-drawn
masks for the cup, the saucer and the spoon, written in the released code's folder layout.

    python experiments/scenes/make_coffee_scene.py src/break_a_scene/assets/scenes/coffee
"""

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageChops, ImageDraw, ImageFilter


def _shape(size, ellipses=(), polygons=()):
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for box in ellipses:
        draw.ellipse(box, fill=255)
    for points in polygons:
        draw.polygon(points, fill=255)
    return mask


def main(out: Path) -> None:
    photo = Image.fromarray(skimage.data.coffee())
    size = photo.size  # 600 x 400
    cup = _shape(
        size,
        ellipses=[(172, 15, 410, 205), (193, 228, 262, 305)],
        polygons=[[(178, 110), (405, 110), (395, 200), (370, 250), (330, 280), (260, 285), (215, 260), (185, 200)]],
    )
    spoon = _shape(
        size,
        ellipses=[(325, 235, 408, 325)],
        polygons=[[(396, 68), (424, 70), (416, 112), (394, 240), (372, 240), (398, 110)]],
    )
    spoon = ImageChops.subtract(spoon, _shape(size, ellipses=[(172, 15, 395, 205)]))
    saucer = ImageChops.subtract(ImageChops.subtract(_shape(size, ellipses=[(75, 72, 480, 390)]), cup), spoon)
    out.mkdir(parents=True, exist_ok=True)
    photo.save(out / "img.jpg", quality=95)
    for index, mask in enumerate([cup, saucer, spoon]):
        soft = mask.filter(ImageFilter.GaussianBlur(1.5))  # soft edges, like hand-made masks
        soft.save(out / f"mask{index}.png")
    (out / "classes.txt").write_text("cup\nsaucer\nspoon\n")
    print("wrote", out, [int(np.asarray(m).astype(bool).mean() * 100) for m in (cup, saucer, spoon)], "% coverage")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
