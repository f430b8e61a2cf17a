"""Reading the files a user hands over, so that every way they can be wrong ends in one clear line.

Text files (classes.txt, prompt templates, JSON) are UTF-8, with or without a byte-order mark, with any line
endings; any other encoding is refused by name. Images are refused above `MAX_IMAGE_PIXELS`, from their header,
before a single pixel is decoded (the model sees them at a few hundred pixels a side anyway).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from break_a_scene.errors import UserInputError

# 100 megapixels: above every common camera's photos (24-61 MP), below what decoding would make a memory hazard
MAX_IMAGE_PIXELS = 100_000_000
_UTF16_32_MARKS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
                   b"\xfe\xff": "UTF-16"}
_RESAVE = "save it as UTF-8 (e.g. `iconv -f <its encoding> -t utf-8 old.txt > new.txt`, or your editor's 'Save as')"


def read_text(path: str | Path, what: str) -> str:
    """The file's text, decoded as UTF-8 with its byte-order mark (if any) dropped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserInputError(f"{what} '{path}' cannot be read ({err.strerror}).") from None
    for mark, encoding in _UTF16_32_MARKS.items():
        if data.startswith(mark):
            raise UserInputError(f"{what} '{path}' is {encoding} text; {_RESAVE}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"{what} '{path}' is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}: Latin-1 or "
            f"another 8-bit encoding?); {_RESAVE}."
        ) from None
    if "\x00" in text:
        raise UserInputError(f"{what} '{path}' holds NUL bytes (UTF-16 without a byte-order mark?); {_RESAVE}.")
    return text


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-empty lines of a text file, stripped (\\n, \\r\\n and \\r all end a line)."""
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]


def read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise UserInputError(f"{what} '{path}' is not valid JSON ({err}).") from None


def open_image(path: str | Path, what: str, fix: str = "") -> Image.Image:
    """The decoded image, upright as its EXIF orientation says. `fix` follows the message of a missing file
    (which setting names it)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} '{path}' does not exist.{' ' + fix if fix else ''}")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # PIL's own bomb check would raise before we can say the size; ours is below
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserInputError(f"{what} '{path}' is not a readable image ({err}).") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise UserInputError(
            f"{what} '{path}' is {width}x{height} pixels ({width * height / 1e6:.0f} MP), over the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP; shrink it first, e.g. to 2048 px a side (`convert '{path}' -resize "
            f"2048x2048 smaller.png`): the model sees it at its training resolution anyway."
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:  # a truncated or damaged file
        raise UserInputError(f"{what} '{path}' is not a readable image ({err}).") from None
    return ImageOps.exif_transpose(image)

