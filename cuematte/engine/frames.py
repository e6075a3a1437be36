"""Frame validation and resizing shared by the session, the cues and the clients."""

from __future__ import annotations

import cv2
import numpy as np

from cuematte.engine.errors import FrameFormatError


def check_frame(frame: object, what: str = "frame") -> np.ndarray:
    """Return ``frame`` if it is an (H, W, 3) uint8 RGB array, else raise :class:`FrameFormatError`."""
    if not isinstance(frame, np.ndarray):
        raise FrameFormatError(f"{what} must be a numpy array (H, W, 3) uint8 RGB, got {type(frame).__name__}")
    if frame.size == 0:
        raise FrameFormatError(f"{what} is empty (shape {frame.shape})")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise FrameFormatError(f"{what} is grayscale (shape {frame.shape}); an RGB colour frame is needed")
    if frame.ndim != 3 or frame.shape[2] != 3:
        extra = " (RGBA? drop the alpha channel)" if frame.ndim == 3 and frame.shape[2] == 4 else ""
        raise FrameFormatError(f"{what} must have 3 channels (H, W, 3), got shape {frame.shape}{extra}")
    if frame.dtype != np.uint8:
        raise FrameFormatError(f"{what} must be uint8 RGB, got dtype {frame.dtype}")
    if min(frame.shape[:2]) < 16:
        raise FrameFormatError(f"{what} is too small ({frame.shape[1]}x{frame.shape[0]}); at least 16x16")
    return frame


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled down (never up) so that the long side is at most ``max_side``; sizes stay even."""
    h, w = size
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return h, w
    return max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2)


def resize(image: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize an (H, W[, C]) array to ``size`` (H, W); area averaging when shrinking, linear when growing."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    if nearest:
        interp = cv2.INTER_NEAREST
    elif h < image.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) uint8 -> ``size`` (h, w), antialiased when shrinking, fast at any ratio.

    OpenCV's INTER_AREA is slow for large or non-integer ratios (3.4 ms for 1920x1080 -> 256x144, 1.3 ms for
    1280x720 -> 320x180); a bilinear step to twice the target then a 2x box (its fast integer path) costs 0.2 ms
    at any input size.
    """
    height, width = size
    h, w = image.shape[:2]
    if h >= 2 * height and w >= 2 * width:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if h >= height and w >= width:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an (H, W, 3) float image -> (H, W)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
