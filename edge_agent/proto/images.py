"""Images as training and a device read them alike: an encoded file decoded into the mode its pixels mean, and
fitted to a model's (height, width, channels). model.preprocess, `cdl models predict`, `cdl serve`'s files and the
edge agent's encoded-image inputs all go through these, so a device resizes as training did."""

from __future__ import annotations

import io

import numpy as np


def decode_image(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) as a uint8 array (H, W) or (H, W, C), for training and for a file given
    to `cdl models predict` alike. Raises ValueError (Pillow's errors) if it cannot be decoded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        # a palette PNG's array is its palette indices, a 1-bit one's booleans, a CMYK JPEG's four channels
        # are no RGBA: each in the mode its pixels mean
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        return np.asarray(im)


def unreadable_why(exc: BaseException) -> str:
    """Why a file could not be decoded, in words: Pillow's "cannot identify image file <_io.BytesIO object at
    0x7f…>" names an object of ours, not the file, and is "no image format Pillow reads" here (the agent, `cdl
    models predict` and data.validate's quarantine all said it so)."""
    text = str(exc)
    if "cannot identify image file" in text:
        return "no image format Pillow reads"
    return text[:200] or type(exc).__name__  # "image file is truncated (8 bytes not processed)", ...


def image_channels(arr: np.ndarray) -> int:
    return 1 if arr.ndim == 2 else int(arr.shape[-1])


def to_uint8(a: np.ndarray) -> np.ndarray:
    """16-bit and float images scaled to 8 bits (a cast wrapped 16-bit values around); uint8 as it is."""
    if a.dtype == np.uint8:
        return a
    top = float(a.max(initial=0)) or 1.0
    scale = 255.0 / (65535.0 if top > 255 else 255.0 if top > 1 else 1.0)
    return (a.astype(np.float64) * scale).clip(0, 255).astype(np.uint8)


def fit_image(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """One decoded image (H, W) or (H, W, C) as (height, width, channels) uint8: grayscale (1) or RGB (3), an
    alpha channel dropped, resized (Pillow's default filter, as `cdl models predict` resizes a file) where its
    size differs. An image already of that shape is returned as it is."""
    h, w, c = shape
    a = np.asarray(arr)
    if a.shape == (h, w, c) and a.dtype == np.uint8:
        return a
    if a.ndim == 2 and c == 1 and a.shape == (h, w) and a.dtype == np.uint8:
        return a[..., None]
    from PIL import Image

    a = to_uint8(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}.get(a.shape[-1] if a.ndim == 3 else 0, "")}[a.ndim]
    if not mode:
        raise ValueError(f"an image of shape {list(a.shape)} has no image mode")
    im = Image.fromarray(a, mode=mode).convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h))
    return np.asarray(im, np.uint8).reshape(h, w, c)
