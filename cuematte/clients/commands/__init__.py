"""One module per ``cuematte`` sub-command; options that several commands share are added here."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_temporal_argument(p: argparse.ArgumentParser, applies_to: str = "") -> None:
    """``--temporal``: the engine session's motion-aware alpha smoothing for live video."""
    from cuematte.engine.temporal import VIDEO_SMOOTHING

    p.add_argument("--temporal", type=float, default=VIDEO_SMOOTHING,
                   help=f"{applies_to}motion-aware alpha smoothing against flicker, strength in [0, 1); 0 = off")


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--plans``: where the model runs (cuematte.engine.model.FlashModel)."""
    from cuematte.engine.model import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: TensorRT plans if built for this GPU, else ONNX Runtime CUDA, else CPU")
    p.add_argument("--plans", type=Path, default=None,
                   help="TensorRT plans folder (default: ~/.cache/cuematte/plans/MODEL, as build-engines writes)")


def add_graph_argument(p: argparse._ActionsContainer) -> None:
    """``--graph-in-path``: the service's per-frame graph in every frame's path instead of beside it."""
    p.add_argument("--graph-in-path", action="store_true",
                   help="run the per-frame graph in every frame's path (default: on a background thread, each frame "
                        "matted at once with its newest output moved onto it; docs/service.md)")


def add_vp8_argument(p: argparse._ActionsContainer) -> None:
    """``--aiortc-vp8``: the service's outgoing VP8 with aiortc's own encoder settings."""
    p.add_argument("--aiortc-vp8", action="store_true",
                   help="encode the processed video with aiortc's VP8 settings (default: libvpx's fastest real-time "
                        "speed without its denoiser, half the encoder's time; cuematte.server.encoder)")
