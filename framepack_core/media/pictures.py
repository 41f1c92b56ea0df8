"""Opening the user's picture: any common file, upright, first frame, RGB, never huge in memory."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from framepack_core.method.buckets import nearest_bucket

# Nothing downstream needs more: the largest bucket side is under 2,400 pixels. Bigger pictures
# are reduced while decoding (JPEG: by 2, 4 or 8 while staying at least DRAFT_SIDE) or right
# after, so an 8000 x 8000 photo costs no memory spike.
MAX_SIDE = 4096
DRAFT_SIDE = 2560


def load_picture(source: str | Path | Image.Image, what: str = "picture") -> Image.Image:
    """Open a picture, upright (EXIF orientation applied), first frame, as RGB.

    Raises ValueError with one sentence for anything that is not a readable picture.
    """
    if isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(source)  # a copy: the caller's picture stays as it was
    else:
        image = _open(Path(source), what)
        ImageOps.exif_transpose(image, in_place=True)  # no copy of a possibly huge picture
    image = _to_rgb(image)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white rather than whatever colour hides under them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit samples to 8-bit
    elif image.mode == "F":
        image = image.convert("L")
    return image.convert("RGB")


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise ValueError(f"The {what} {str(path)!r} does not exist or is not a file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.format == "JPEG":
                image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))  # decode at a reduced scale when it is huge
            image.load()  # the first frame of an animation; truncated files fail here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ValueError(f"The {what} {str(path)!r} is too large to open safely.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"The {what} {str(path)!r} is not a picture this app can read ({error}).") from None
    return image


def crop_to_bucket(image: Image.Image, resolution: int) -> np.ndarray:
    """Resize to cover the nearest bucket (Lanczos) and centre-crop: (H, W, 3) uint8."""
    height, width = nearest_bucket(image.height, image.width, resolution)
    return resize_and_center_crop(image, width, height)


def resize_and_center_crop(image: Image.Image, width: int, height: int) -> np.ndarray:
    if (image.width, image.height) == (width, height):
        return np.asarray(image.convert("RGB"))
    scale = max(width / image.width, height / image.height)
    resized = image.convert("RGB").resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.LANCZOS)
    left, top = (resized.width - width) / 2, (resized.height - height) / 2
    return np.asarray(resized.crop((left, top, left + width, top + height)))
