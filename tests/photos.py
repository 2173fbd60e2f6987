"""Real photographs in every mode a real folder holds, plus broken files: built by tests from crops of the two
photos scikit-learn ships (china.jpg, flower.jpg), so nothing is downloaded."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("china", "flower")
# mode name -> (file suffix, lossless?)
MODES = {"jpeg_rgb": (".jpg", False), "jpeg_l": (".jpg", False), "jpeg_cmyk": (".jpg", False),
         "jpeg_exif6": (".jpg", False), "png_rgb": (".png", True), "png_rgba": (".png", True),
         "png_p": (".png", True), "png_i16": (".png", True), "png_la": (".png", True), "bmp_rgb": (".bmp", True),
         "tiff_rgb": (".tif", True), "webp_rgb": (".webp", False)}


def photo(cls: str) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    index = [Path(f).stem for f in data.filenames].index(cls)
    return data.images[index]


def crop(cls: str, i: int, w: int = 48, h: int = 40) -> np.ndarray:
    """The i-th w×h crop of a sample photo (non-square, so a rotation shows in the shape)."""
    img = photo(cls)
    y, x = 37 * i % (img.shape[0] - h), 53 * i % (img.shape[1] - w)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.clip(np.floor(rgb * a + 255.0 * (1 - a) + 0.5), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, mode: str) -> tuple[bytes, np.ndarray]:
    """(file bytes, the RGB pixels decoding must give) for one crop saved in `mode`."""
    img, buf = Image.fromarray(rgb, "RGB"), io.BytesIO()
    gray = np.asarray(img.convert("L"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    expect = rgb
    if mode == "jpeg_rgb":
        img.save(buf, "JPEG", quality=95)
    elif mode == "jpeg_l":
        img.convert("L").save(buf, "JPEG", quality=95)
        expect = np.repeat(gray[..., None], 3, axis=2)
    elif mode == "jpeg_cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=95)
    elif mode == "jpeg_exif6":  # stored sideways; Orientation 6 says: turn 90° clockwise to display
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(buf, "JPEG", quality=95, exif=exif)
    elif mode == "png_rgb":
        img.save(buf, "PNG")
    elif mode == "png_rgba":
        rgba = np.dstack([rgb, alpha])
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
        expect = _over_white(rgb, alpha)
    elif mode == "png_la":
        Image.fromarray(np.dstack([gray, alpha]), "LA").save(buf, "PNG")
        expect = _over_white(np.repeat(gray[..., None], 3, axis=2), alpha)
    elif mode == "png_p":
        pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        pal.save(buf, "PNG")
        expect = np.asarray(pal.convert("RGB"))
    elif mode == "png_i16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(buf, "PNG")  # 16-bit: 257·v scales back to v
        expect = np.repeat(gray[..., None], 3, axis=2)
    elif mode == "bmp_rgb":
        img.save(buf, "BMP")
    elif mode == "tiff_rgb":
        img.save(buf, "TIFF")
    elif mode == "webp_rgb":
        img.save(buf, "WEBP", quality=95)
    else:
        raise ValueError(mode)
    return buf.getvalue(), expect


def broken_files() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, the reason prefix prepare must give)."""
    jpeg, _ = encode(crop("china", 9), "jpeg_rgb")
    png, _ = encode(crop("flower", 9), "png_rgb")
    rng = np.random.default_rng(0)
    return {"zero.jpg": (b"", "empty file"),
            "truncated.jpg": (jpeg[: len(jpeg) * 2 // 3], "undecodable"),
            "no_end_marker.jpg": (jpeg[:-2], "undecodable"),
            "truncated_tail.png": (png[:-20], "undecodable"),  # pixel data whole, file cut: still refused
            "notes.txt": (b"class notes, not a picture\n", "not an image"),
            "random.jpg": (rng.bytes(2048), "not an image"),
            "fake_header.jpg": (b"\xff\xd8\xff\xe0" + rng.bytes(600), "undecodable")}


@dataclass
class PhotoFolder:
    root: Path
    good: dict[str, tuple[np.ndarray, bool]] = field(default_factory=dict)  # path -> (pixels, lossless)
    broken: dict[str, str] = field(default_factory=dict)                     # path -> reason prefix


def photo_folder(root: Path, per_mode: int = 1, broken: bool = True) -> PhotoFolder:
    """An ImageFolder root/<china|flower>/... with `per_mode` crops per class in every MODES entry (one of
    them in a nested folder) and, optionally, every broken_files() entry spread over the classes."""
    out = PhotoFolder(Path(root))
    for c, cls in enumerate(CLASSES):
        k = 0
        for mode, (suffix, lossless) in MODES.items():
            for _ in range(per_mode):
                data, expect = encode(crop(cls, k), mode)
                sub = "nested/deeper/" if k == 1 else ""
                path = out.root / cls / f"{sub}{k:03d}_{mode}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                out.good[str(path)] = (expect, lossless)
                k += 1
        if broken:
            for j, (name, (data, reason)) in enumerate(broken_files().items()):
                if j % len(CLASSES) == c:
                    path = out.root / cls / name
                    path.write_bytes(data)
                    out.broken[str(path)] = reason
    return out
