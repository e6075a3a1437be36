"""The per-user matting session: flash once, then matte every frame against the cached flash features.

    session = MattingSession()              # shipped default model, ONNX Runtime CPU
    cue = session.set_flash(flash, noflash)  # trimap + flash graph, once: caches T^f
    result = session.matte(frame)            # per-frame graph only
    result.alpha, result.foreground

Like segment-anything's ``SamPredictor.set_image``/``predict``: the expensive half runs once and its output
(the flash tokens T^f) is a named input of the cheap half; calling :meth:`MattingSession.matte` before
:meth:`MattingSession.set_flash` raises :class:`FlashNotSetError`. All state lives in the session object.
Frames are (H, W, 3) uint8 RGB of any size; the session resizes to the model's working size and back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.cues.trimap import FlashCue, PersonSegmenter, TrimapParams, build_flash_trimap
from engine.errors import FlashNotSetError, ModelError
from engine.frames import check_frame, fit_within, resize
from engine.model import FlashModel
from engine.temporal import TemporalSmoother

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Matte:
    """One frame's result, at the input frame's size."""

    alpha: np.ndarray  # (H, W) float32 in [0, 1]
    foreground: np.ndarray  # (H, W, 3) uint8 RGB, background colour removed at the edges


@dataclass
class _FlashState:
    cache: dict[str, np.ndarray]  # the flash graph's outputs: flash_features (1, N, C') = T^f [, flash_prior]
    cue: FlashCue
    # The flash graph's feeds, kept so the uncached path can recompute T^f: flash (1, 3, H, W) float32,
    # flash_trimap (1, 3, H, W) one-hot[, flash_evidence (1, 1, H, W)].
    inputs: dict[str, np.ndarray]


def create_segmenter(kind: str | PersonSegmenter | None, threads: int | None = None) -> PersonSegmenter | None:
    """'mediapipe' (default, pretrained person segmenter), 'grabcut' / None (weight-free), or an object."""
    if kind is None or kind == "grabcut":
        return None
    if isinstance(kind, str):
        if kind != "mediapipe":
            raise ModelError(f"unknown segmenter {kind!r}; choose 'mediapipe' or 'grabcut'")
        from engine.cues.segmenter import MediaPipeSegmenter

        return MediaPipeSegmenter(threads=threads)
    return kind


def to_nchw(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    out = np.empty((1, 3, *image.shape[:2]), np.float32)
    np.multiply(image.transpose(2, 0, 1), np.float32(1 / 255), out=out[0])
    return out


@dataclass
class StageTimes:
    """Milliseconds of the last call of each stage (for stats and the benchmark)."""

    ms: dict[str, float] = field(default_factory=dict)

    def record(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.ms[stage] = (now - start) * 1000.0
        return now


class MattingSession:
    """Flash/no-flash matting for one camera stream. Not thread-safe: one caller at a time."""

    def __init__(self, model: str | Path | FlashModel | None = None, *, providers: Sequence[str] = ("cpu",),
                 threads: int | None = None, segmenter: str | PersonSegmenter | None = "mediapipe",
                 max_side: int = 1280, trimap_params: TrimapParams | None = None, temporal: float = 0.0) -> None:
        self.model = model if isinstance(model, FlashModel) else FlashModel(model, providers=providers, threads=threads)
        self.segmenter = create_segmenter(segmenter, threads)
        if self.model.info.person_mask and self.segmenter is None:
            raise ModelError(f"model {self.model.info.path} takes a per-frame person mask; use segmenter='mediapipe'")
        self.max_side = max_side
        self.trimap_params = trimap_params or TrimapParams()
        self.times = StageTimes()
        # Motion-aware alpha smoothing across consecutive matte() calls (0 = off); restarts with every flash.
        self.smoother = TemporalSmoother(strength=temporal)
        self._flash: _FlashState | None = None

    # -- state --------------------------------------------------------------------------------------------
    @property
    def has_flash(self) -> bool:
        return self._flash is not None

    @property
    def flash_cue(self) -> FlashCue:
        if self._flash is None:
            raise FlashNotSetError("no flash yet: call set_flash(flash, noflash) first")
        return self._flash.cue

    def reset(self) -> None:
        """Forget the cached flash features; the next :meth:`matte` needs a new :meth:`set_flash`."""
        self._flash = None
        self.smoother.reset()

    # -- the cached half ---------------------------------------------------------------------------------------
    def set_flash(self, flash: np.ndarray, noflash: np.ndarray) -> FlashCue:
        """Build the flash trimap and run the flash graph once; cache T^f. Replaces any earlier flash.

        flash, noflash: (H, W, 3) uint8 RGB of the same size. On error the previous flash state is kept.
        """
        t0 = time.perf_counter()
        check_frame(flash, "flash frame")
        check_frame(noflash, "no-flash frame")
        size = fit_within(flash.shape[:2], self.max_side)
        flash_s = resize(flash, size)
        # A model that sees the flash itself per frame can work from an all-unknown trimap when the engine
        # cannot single the subject out; older models need a located subject.
        cue = build_flash_trimap(flash_s, resize(noflash, size) if noflash.shape == flash.shape else noflash,
                                 self.segmenter, self.trimap_params, allow_unknown=self.model.info.flash_prior)
        t1 = self.times.record("trimap", t0)
        inputs = {"flash": to_nchw(flash_s), "flash_trimap": cue.one_hot()[None]}
        if self.model.info.flash_evidence:
            inputs["flash_evidence"] = cue.evidence_map()[None, None]
        cache = self._run_flash(inputs)
        self.times.record("flash", t1)
        self._flash = _FlashState(cache=cache, cue=cue, inputs=inputs)
        self.smoother.reset()
        return cue

    def _run_flash(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model.flash.run(inputs)
        return {name: out[name] for name in self.model.cached_names}

    # -- the per-frame half -------------------------------------------------------------------------------------
    def matte(self, frame: np.ndarray, *, reuse_flash: bool = True) -> Matte:
        """Alpha and foreground of one no-flash frame (H, W, 3) uint8 RGB.

        ``reuse_flash=False`` recomputes T^f from the stored flash inputs first (the uncached, first-frame
        path; same result, used by tests and the benchmark).
        """
        state = self._flash
        if state is None:
            raise FlashNotSetError("matte() called before set_flash(): flash once to cache the flash features")
        check_frame(frame)
        t0 = time.perf_counter()
        cache = state.cache
        if not reuse_flash:
            cache = self._run_flash(state.inputs)
            t0 = self.times.record("flash", t0)
        h, w = frame.shape[:2]
        size = fit_within((h, w), self.max_side)
        small = resize(frame, size)
        feeds = {"frame": to_nchw(small), **cache}
        if self.model.info.person_mask:
            assert self.segmenter is not None
            mask_in = resize(small, self.model.info.cmn_size)
            feeds["person_mask"] = self.segmenter.segment(mask_in)[None, None].astype(np.float32)
        t1 = self.times.record("pre", t0)
        out = self.model.frame.run(feeds)
        t2 = self.times.record("graph", t1)
        alpha = self.smoother(small, out["alpha"][0, 0])
        fg = (out["foreground"][0].transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
        if size != (h, w):
            alpha = resize(alpha, (h, w))
            fg = resize(fg, (h, w))
        self.times.record("post", t2)
        return Matte(alpha=np.clip(alpha, 0.0, 1.0, dtype=np.float32), foreground=fg)
