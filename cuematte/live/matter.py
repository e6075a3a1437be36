"""Matte, composite, pass through until a flash: one frame of a live loop, on the caller's worker thread."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from cuematte.engine.compositing import Background, composite
from cuematte.engine.cues.trimap import BG, FlashCue
from cuematte.engine.drift import DriftDetector
from cuematte.engine.errors import CuematteError
from cuematte.engine.frames import resize
from cuematte.engine.pipelined import PipelinedSession
from cuematte.engine.session import MattingSession

log = logging.getLogger(__name__)


@dataclass
class Processed:
    """One frame's output: the RGB frame to show, whether it was matted, stage times (ms), and a drift flip
    ("drifted" / "settled") or an error message for the caller to report once."""

    frame: np.ndarray
    matted: bool
    ms: dict[str, float] = field(default_factory=dict)
    drift: str | None = None
    error: str | None = None
    graph_age: int = 0  # frames the per-frame graph's output lagged behind this frame (background graph)


def _same_aspect(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return abs(a[1] / a[0] - b[1] / b[0]) < 0.02


class LiveMatter:
    """A matting session with its background and scene-drift check. Not thread-safe: one worker calls it.

    ``drift_every``: every how many matted frames the scene is compared with the no-flash frame of the flash
    (0: never); ``drifted`` then says the cached flash no longer fits the scene.
    """

    def __init__(self, session: MattingSession | PipelinedSession, background: Background, *,
                 drift_every: int = 5) -> None:
        self.session = session
        self.background = background  # replaced by the caller at any time: read once per frame
        self.drift = DriftDetector()
        self.drift_every = drift_every
        self._matted = 0

    @property
    def has_flash(self) -> bool:
        return self.session.has_flash

    @property
    def drifted(self) -> bool:
        return self.drift.drifted

    @property
    def graph_runs(self) -> int:
        """Per-frame graph runs so far (with a background graph, fewer than the frames matted)."""
        return self.session.graph_runs

    @property
    def graph_waits(self) -> int:
        """Frames so far that waited for a background graph run (0 with the graph in every frame's path, where
        every frame runs it itself)."""
        return self.session.graph_waits if isinstance(self.session, PipelinedSession) else 0

    def close(self) -> None:
        """Stop the session's background graph, if it has one."""
        if isinstance(self.session, PipelinedSession):
            self.session.close()

    def set_flash(self, flash: np.ndarray, noflash: np.ndarray) -> FlashCue:
        """Cache the flash (the session's trimap and flash graph); its no-flash frame becomes the drift
        reference. A no-flash frame of the same aspect but another size (a stream rescaled between the two) is
        brought to the flash frame's size. A flash that located no one is refused (NoSubjectError). On error the
        previous flash stays."""
        if noflash.shape != flash.shape and _same_aspect(noflash.shape, flash.shape):
            noflash = resize(noflash, flash.shape[:2])
        cue = self.session.set_flash(flash, noflash, require_subject=True)
        background = resize((cue.trimap == BG).astype(np.uint8), noflash.shape[:2], nearest=True).astype(bool)
        self.drift.set_reference(noflash, background)
        self._matted = 0
        return cue

    def reset(self) -> None:
        self.session.reset()
        self.drift.clear()

    def process(self, rgb: np.ndarray) -> Processed:
        """(H, W, 3) uint8 RGB -> the frame to show. Before a flash, the frame itself. A matting error costs
        this frame its matte (it passes through, with the error), never the loop."""
        if not self.session.has_flash:
            return Processed(rgb, matted=False)
        background = self.background
        try:
            m = self.session.matte(rgb)
        except CuematteError as exc:
            return Processed(rgb, matted=False, error=str(exc))
        except Exception as exc:  # a bug must cost this frame its matte, not the session its video
            log.exception("matte failed")
            return Processed(rgb, matted=False, error=f"internal error while matting: {exc}")
        t1 = time.perf_counter()
        out = composite(rgb, m.alpha, m.foreground, background)
        t2 = time.perf_counter()
        drift = None
        self._matted += 1
        if self.drift_every and self.drift.has_reference and self._matted % self.drift_every == 0:
            drift = self.drift.update(rgb)
        t3 = time.perf_counter()
        ms = {k: v for k, v in self.session.times.ms.items() if k not in ("trimap", "flash")}
        ms |= {"composite": (t2 - t1) * 1e3, "drift": (t3 - t2) * 1e3}
        age = self.session.age if isinstance(self.session, PipelinedSession) else 0
        return Processed(out, matted=True, ms=ms, drift=drift, graph_age=age)
