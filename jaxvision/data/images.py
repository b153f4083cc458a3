"""Reading image files: one decoder for every reader (image folders, YOLO data sets, predict) and
one scan that checks a whole data set's files when it is opened.

:func:`open_image` turns a picture upright by its EXIF orientation before anything else, as
OpenCV (ultralytics' reader) and phone galleries show it; a file that cannot be decoded raises a
:class:`~jaxvision.errors.DatasetError` naming it. :func:`scan_images` reads only the headers
(and, for JPEG, the end-of-image marker, as ultralytics' label scan does), so a data set of
thousands of files is checked in seconds and every bad one is reported at once, not when
training first reaches it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from jaxvision.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
EXIF_ORIENTATION = 0x0112  # EXIF tag; values 5-8 rotate the image by 90 degrees
JPEG_END = b"\xff\xd9"  # the end-of-image marker a complete JPEG file closes with
SKIP_HINT = "(pass --skip-bad-images to leave undecodable files out)"


def open_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, turned upright by its EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except Exception as e:  # pillow and its plugins (e.g. HEIF openers) raise many kinds
        raise DatasetError(f"cannot decode image {path}: {e.__class__.__name__}: {e}") from None


def upright_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image at ``path`` after its EXIF rotation, from the header alone."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def _problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a usable image, or None; its header is all that is read."""
    try:
        with Image.open(path) as img:
            img.verify()
            jpeg = img.format == "JPEG"
    except Exception as e:  # pillow raises many kinds for a bad header
        return f"{e.__class__.__name__}: {e}"
    if jpeg:
        with open(path, "rb") as f:
            f.seek(-2, 2)
            if f.read() != JPEG_END:
                return "truncated JPEG (no end-of-image marker)"
    return None


def scan_images(paths: list[Path]) -> tuple[dict[int, tuple[int, int]], list[str]]:
    """Check every file: the upright (width, height) of each good one by its index, and one line
    per bad file (``path: why``)."""
    sizes, bad = {}, []
    for i, path in enumerate(paths):
        why = _problem(path)
        if why is None:
            sizes[i] = upright_size(path)
        else:
            bad.append(f"{path}: {why}")
    return sizes, bad


__all__ = [
    "EXIF_ORIENTATION",
    "IMAGE_EXTENSIONS",
    "SKIP_HINT",
    "open_image",
    "scan_images",
    "upright_size",
]
