"""Samples as files, the layout the evaluation CLI reads.

Pair ``<id>``: ``<id>_noflash.png``, ``<id>_flash.png`` (8-bit RGB), ``<id>_alpha.png`` (16-bit grey),
``<id>_fg.png``, ``<id>_bg.png`` (8-bit RGB, noise-free layers of the no-flash frame), and extras
``<id>_flash_alpha.png`` (16-bit), ``<id>_prior.png`` (8-bit grey).

Clip folder: ``flash.png``, ``flash_alpha.png``, then per frame t ``<t:04d>_noflash.png``,
``<t:04d>_alpha.png``, ``<t:04d>_fg.png``, ``<t:04d>_bg.png``, ``<t:04d>_prior.png``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cuematte.training.data.color import F32
from cuematte.training.data.samples import FlashSample, FlashSequence


def write_rgb(path: Path, img: F32) -> None:
    """(H, W, 3) float RGB in [0, 1] -> 8-bit PNG."""
    u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def write_matte(path: Path, matte: F32, bits: int = 16) -> None:
    """(H, W) float in [0, 1] -> 16-bit (or 8-bit) grey PNG."""
    top = 65535 if bits == 16 else 255
    arr = np.clip(matte * top + 0.5, 0, top).astype(np.uint16 if bits == 16 else np.uint8)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"cannot write {path}")


def read_rgb(path: Path) -> F32:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_matte(path: Path) -> F32:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise OSError(f"cannot read {path}")
    if m.ndim == 3:
        m = m[..., 0]
    return m.astype(np.float32) / (65535.0 if m.dtype == np.uint16 else 255.0)


def write_sample(folder: Path, sid: str, s: FlashSample) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_rgb(folder / f"{sid}_noflash.png", s.noflash)
    write_rgb(folder / f"{sid}_flash.png", s.flash)
    write_matte(folder / f"{sid}_alpha.png", s.alpha)
    write_rgb(folder / f"{sid}_fg.png", s.foreground)
    write_rgb(folder / f"{sid}_bg.png", s.background)
    write_matte(folder / f"{sid}_flash_alpha.png", s.flash_alpha)
    write_matte(folder / f"{sid}_prior.png", s.person_prior, bits=8)


def write_sequence(folder: Path, seq: FlashSequence) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_rgb(folder / "flash.png", seq.flash)
    write_matte(folder / "flash_alpha.png", seq.flash_alpha)
    for t in range(seq.noflash.shape[0]):
        write_rgb(folder / f"{t:04d}_noflash.png", seq.noflash[t])
        write_matte(folder / f"{t:04d}_alpha.png", seq.alpha[t])
        write_rgb(folder / f"{t:04d}_fg.png", seq.foreground[t])
        write_rgb(folder / f"{t:04d}_bg.png", seq.background[t])
        write_matte(folder / f"{t:04d}_prior.png", seq.person_prior[t], bits=8)
