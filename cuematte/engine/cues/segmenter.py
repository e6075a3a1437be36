"""Pretrained person segmenter for the flash trimap: MediaPipe selfie segmentation on ONNX Runtime.

Two Apache-2.0 models from ``mediapipe==0.10.21``, converted by ``cuematte/export/mediapipe_segmenter.py`` and shipped
in ``cuematte/engine/models/segmenter/``: ``selfie_segmentation`` (256x256 input) and ``selfie_segmentation_landscape``
(144x256, exactly 16:9). Both take ``image`` float32 (1, 3, H, W) RGB in [0, 1] and return ``mask`` float32
(1, 1, H, W) person probability: the graph already ends in a sigmoid, so there is no post-activation.

Pre-processing is a plain resize (stretch), not a letterbox: MediaPipe's own graph feeds these models a
stretched image (``ImageToTensorCalculator`` with ``keep_aspect_ratio: false``), which is what they were
tuned on; a 16:9 call frame fills the landscape model's 256x144 input exactly, whereas a letterbox into
256x256 would spend 44 % of the input on padding. Shrinking is antialiased (area averaging; MediaPipe
samples bilinearly, which aliases at a 5x reduction); the mask comes back to the frame size bilinearly, as
in MediaPipe.

No torch here: numpy, OpenCV and ONNX Runtime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort

from cuematte.engine.errors import BackendError, CuematteError, FrameFormatError, ModelError
from cuematte.engine.frames import check_frame, shrink

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "segmenter"
SQUARE_MODEL = "selfie_segmentation"
LANDSCAPE_MODEL = "selfie_segmentation_landscape"
FEATURES = "features"  # the second output: the decoder's last feature map (cuematte/export/mediapipe_segmenter.py)
FEATURE_CHANNELS = 16


class SegmenterError(CuematteError):
    """Base of the segmenter's errors."""


class SegmenterModelError(SegmenterError, ModelError):
    """A segmenter model file is missing or cannot be loaded."""


class SegmenterInputError(SegmenterError, FrameFormatError):
    """The image to segment is not an (H, W, 3) uint8 RGB array."""


class SegmenterBackendError(SegmenterError, BackendError):
    """A requested ONNX Runtime execution provider is not available."""


class Segmenter(Protocol):
    """A person segmenter: ``segment((H, W, 3) uint8 RGB[, size]) -> (H, W) (or size) float32 probability``."""

    name: str

    def segment(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray: ...


class MediaPipeSegmenter:
    """MediaPipe selfie segmentation on ONNX Runtime.

    ``landscape``: None picks per frame (the landscape model when w > h, else the square one), True / False
    forces the landscape / square model. ``threads``: ONNX Runtime intra-op threads (None: its default, one
    per core). ``providers``: ONNX Runtime execution providers (default CPU). Sessions are built here, once.
    """

    name = "mediapipe"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        landscape: bool | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.landscape = landscape
        wanted = {None: (SQUARE_MODEL, LANDSCAPE_MODEL), True: (LANDSCAPE_MODEL,), False: (SQUARE_MODEL,)}
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            available = ort.get_available_providers()
            raise SegmenterBackendError(f"ONNX Runtime provider(s) {missing} not available; have {available}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        # A sub-millisecond model between other per-frame stages: spinning pool threads would only steal
        # those stages' cores (measured: p90 latency x4 with 2 spinning threads on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # model -> (h, w) of its input
        for model in wanted[landscape]:
            path = model_dir / f"{model}.onnx"
            if not path.is_file():
                raise SegmenterModelError(
                    f"segmenter model {path} is missing; create it with "
                    f"`python -m cuematte.export.mediapipe_segmenter --out {model_dir}`"
                )
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # ORT raises its own untyped errors for corrupt or foreign files
                raise SegmenterModelError(f"cannot load segmenter model {path}: {exc}") from exc
            shape = session.get_inputs()[0].shape
            if [i.name for i in session.get_inputs()] != ["image"] or len(shape) != 4 or shape[1] != 3:
                raise SegmenterModelError(f"{path} is not a segmenter model (image (1, 3, H, W) -> mask)")
            self._sessions[model] = session
            self._sizes[model] = (int(shape[2]), int(shape[3]))

    def pick(self, height: int, width: int) -> str:
        """The model used for an (height, width) frame: landscape when w > h, unless forced in __init__."""
        if self.landscape is None:
            return LANDSCAPE_MODEL if width > height else SQUARE_MODEL
        return LANDSCAPE_MODEL if self.landscape else SQUARE_MODEL

    def segment(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 person probability in [0, 1], or at ``size`` (h, w)."""
        return self._run(image, size, features=False)[0]

    def segment_with_features(self, image: np.ndarray,
                              size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> its person probability (H, W) (or at ``size``) and the segmenter's decoder
        features (16, h, w) float32 at half the model's input size (72x128 for the landscape model): what a
        network trained on real people saw in the frame, for models that take real-data features."""
        mask, feats = self._run(image, size, features=True)
        assert feats is not None
        return mask, feats

    def _run(self, image: np.ndarray, size: tuple[int, int] | None, *,
             features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            check_frame(image, "segmenter input")
        except FrameFormatError as exc:
            raise SegmenterInputError(str(exc)) from None
        h, w = image.shape[:2]
        model = self.pick(h, w)
        mh, mw = self._sizes[model]
        small = shrink(image, (mh, mw))
        x = np.empty((1, 3, mh, mw), np.float32)
        np.multiply(small.transpose(2, 0, 1), np.float32(1 / 255), out=x[0])
        session = self._sessions[model]
        if features and FEATURES not in {o.name for o in session.get_outputs()}:
            raise SegmenterModelError(f"segmenter model {model} has no {FEATURES!r} output; re-create it with "
                                      "`python -m cuematte.export.mediapipe_segmenter`")
        outs = session.run(["mask", FEATURES] if features else ["mask"], {"image": x})
        oh, ow = size or (h, w)
        out = cv2.resize(outs[0][0, 0], (ow, oh), interpolation=cv2.INTER_LINEAR)
        # Bilinear weights are convex, but their float rounding can overshoot 1 by an ulp.
        return np.minimum(out, np.float32(1.0), out=out), (outs[1][0] if features else None)


__all__ = [
    "DEFAULT_MODEL_DIR",
    "LANDSCAPE_MODEL",
    "SQUARE_MODEL",
    "MediaPipeSegmenter",
    "Segmenter",
    "SegmenterBackendError",
    "SegmenterError",
    "SegmenterInputError",
    "SegmenterModelError",
]
