"""A frame number written into the pixels, readable after a video codec and colour conversion.

Layout: a band across the top of the frame, ``ROWS`` rows of ``COLS`` grey cells. Each row starts with a white
and a black reference cell (so each row carries its own threshold, whatever the codec did to the levels); the
remaining cells hold 16 bits of the frame number and an 8-bit CRC, one bit per cell, white = 1. Cells are about
a sixteenth of the frame high and a fourteenth wide: big, flat and grey, so VP8/H.264 at WebRTC bit-rates and
4:2:0 chroma subsampling leave their centres alone. The reader looks only at the centre half of each cell and
returns ``None`` when the references lack contrast or the CRC does not match, so a frame whose band was
composited away (a background replaced over it) is counted as unreadable, never as a wrong number.

The geometry is relative to the frame size, so a frame scaled on the way still decodes.
Numbers wrap at 65536 (36 minutes at 30 fps); callers unwrap if they run longer.
"""

from __future__ import annotations

import numpy as np

COLS = 14
ROWS = 2
NUMBER_BITS = 16
CRC_BITS = 8
_REFS = 2  # white, black at the start of every row
_DATA_PER_ROW = COLS - _REFS
assert ROWS * _DATA_PER_ROW == NUMBER_BITS + CRC_BITS
MODULO = 1 << NUMBER_BITS
MIN_CONTRAST = 64.0  # white - black reference, in 8-bit levels
WHITE, BLACK = 255, 0


def crc8(data: bytes, poly: int = 0x07) -> int:
    """CRC-8 (ATM polynomial x^8 + x^2 + x + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def band_height(height: int) -> int:
    """Rows of pixels the code occupies at the top of a frame ``height`` high."""
    return _row_edges(height)[-1]


def _cell_h(height: int) -> int:
    return max(8, round(height / 16))


def _row_edges(height: int) -> list[int]:
    return [j * _cell_h(height) for j in range(ROWS + 1)]


def _col_edges(width: int) -> list[int]:
    return [round(i * width / COLS) for i in range(COLS + 1)]


def _bits(number: int) -> list[int]:
    n = number % MODULO
    payload = n.to_bytes(2, "big")
    word = (n << CRC_BITS) | crc8(payload)
    total = NUMBER_BITS + CRC_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def stamp(frame: np.ndarray, number: int) -> np.ndarray:
    """Write ``number`` into the top band of an (H, W, 3) uint8 frame, in place; returns the frame."""
    h, w = frame.shape[:2]
    if h < 32 or w < 2 * COLS:
        raise ValueError(f"frame {w}x{h} is too small for a frame code")
    ys, xs = _row_edges(h), _col_edges(w)
    bits = _bits(number)
    for r in range(ROWS):
        cells = [1, 0, *bits[r * _DATA_PER_ROW : (r + 1) * _DATA_PER_ROW]]
        for c, bit in enumerate(cells):
            frame[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = WHITE if bit else BLACK
    return frame


def _cell_means(frame: np.ndarray) -> np.ndarray:
    """(ROWS, COLS) mean grey level of the centre half of every cell."""
    h, w = frame.shape[:2]
    ys, xs = _row_edges(h), _col_edges(w)
    out = np.empty((ROWS, COLS), np.float32)
    for r in range(ROWS):
        y0, y1 = ys[r], ys[r + 1]
        qy = (y1 - y0) // 4
        for c in range(COLS):
            x0, x1 = xs[c], xs[c + 1]
            qx = (x1 - x0) // 4
            out[r, c] = float(frame[y0 + qy : y1 - qy, x0 + qx : x1 - qx].mean())
    return out


def read(frame: np.ndarray) -> int | None:
    """The number stamped into ``frame`` (H, W, 3) uint8, or ``None`` if the band is unreadable or corrupt."""
    h, w = frame.shape[:2]
    if h < 32 or w < 2 * COLS:
        return None
    means = _cell_means(frame)
    bits: list[int] = []
    for r in range(ROWS):
        white, black = means[r, 0], means[r, 1]
        if white - black < MIN_CONTRAST:
            return None
        bits += [int(v > (white + black) / 2) for v in means[r, _REFS:]]
    word = 0
    for b in bits:
        word = (word << 1) | b
    number, crc = word >> CRC_BITS, word & 0xFF
    if crc8(number.to_bytes(2, "big")) != crc:
        return None
    return number
