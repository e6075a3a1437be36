"""One module per ``cuematte`` sub-command; options that several commands share are added here."""

from __future__ import annotations

import argparse


def add_temporal_argument(p: argparse.ArgumentParser, applies_to: str = "") -> None:
    """``--temporal``: the engine session's motion-aware alpha smoothing for live video."""
    from engine.temporal import VIDEO_SMOOTHING

    p.add_argument("--temporal", type=float, default=VIDEO_SMOOTHING,
                   help=f"{applies_to}motion-aware alpha smoothing against flicker, strength in [0, 1); 0 = off")
