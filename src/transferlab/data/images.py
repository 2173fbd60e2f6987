"""Decoding image files and turning them into model inputs, the same way in every stage.

Every file becomes 8-bit RGB by one rule (DECODER): EXIF orientation applied; transparency composited onto
white; 16/32-bit integer images (I;16*, I) read as 16-bit and scaled to 8 bits; every other mode through
PIL's convert("RGB") (CMYK naively: embedded ICC profiles are not applied). Truncated files are rejected,
never loaded with ImageFile.LOAD_TRUNCATED_IMAGES; floating-point images (mode F) are rejected (no fixed
range to scale from).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from transferlab.config.errors import PipelineError

# Part of the feature cache key (transferlab.features.key): change it whenever the pixels decode() gives change.
DECODER = f"PIL {PIL.__version__} exif_transpose, 16-bit scaled, alpha over white, RGB"
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}


class ImageRejected(PipelineError):
    """A file that is not a usable image; `reason` is the short line rejected.csv records."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}; remove or replace the file")
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What prepare records of one decodable file."""

    sha256: str          # of the file's bytes (the feature store's per-image key)
    pixel_sha256: str    # of the decoded RGB pixels and their size (finds re-encoded duplicates)
    width: int
    height: int


def _check_truncation_policy() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise PipelineError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on (set by other code in this process): "
                            "truncated images would load as garbage; leave it off")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB, by the one rule in this module's docstring."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        raise ValueError("floating-point image (mode F) has no fixed range; save it as 8- or 16-bit")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_bytes(data: bytes, path: Path | str = "<bytes>") -> Image.Image:
    """Decode one file's bytes as RGB (EXIF orientation applied); ImageRejected if they are no usable image."""
    _check_truncation_policy()
    if not data:
        raise ImageRejected(path, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format == "PNG":  # PIL loads a PNG cut after its pixel data without complaint
                with Image.open(io.BytesIO(data)) as again:
                    again.verify()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise ImageRejected(path, "not an image: no known image format") from None
    except Image.DecompressionBombError as err:
        raise ImageRejected(path, f"undecodable: {err}") from None
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError, EOFError) as err:
        # PIL's plugins raise all of these for malformed data (SyntaxError: broken headers and EXIF)
        raise ImageRejected(path, f"undecodable: {type(err).__name__}: {err}") from None


def decode(path: Path | str) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied; ImageRejected if it is no usable image."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageRejected(path, f"unreadable: {err.strerror or err}") from None
    return decode_bytes(data, path)


def pixel_sha256(img: Image.Image) -> str:
    """Hash of an RGB image's size and pixels: equal for the same picture saved in another file format."""
    h = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def inspect(path: Path | str) -> ImageInfo:
    """Read a file once: its hashes and decoded size; ImageRejected (with a reason) if it is no usable image."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageRejected(path, f"unreadable: {err.strerror or err}") from None
    img = decode_bytes(data, path)
    return ImageInfo(hashlib.sha256(data).hexdigest(), pixel_sha256(img), img.width, img.height)
