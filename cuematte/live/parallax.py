"""The parallax cue in a live loop: each new frame matted against a kept reference frame.

    live = ParallaxLive(parallax_session)
    done = live.process(rgb, background)   # on the caller's worker thread, one frame at a time
    done.frame, done.state, done.detail, done.parallax_px

:meth:`ParallaxSession.matte(frame, reference) <cuematte.engine.parallax.session.ParallaxSession.matte>` mattes the
*current* frame (view 1, the one shown) with the reference as the second view. Reference policy:

* the first frame with a person (and some background around them) becomes the reference;
* while the current frame shows too little parallax against it (:class:`NoParallaxError`: the user held still), the
  frame passes through, state ``parallax-waiting`` ("move your head or the camera slightly"); after a first good
  matte, such frames are composited with the **last good matte** for up to ``hold_s`` seconds (state stays
  ``parallax-matting``), so holding still for a moment does not flicker;
* enough parallax: matted, state ``parallax-matting``;
* the reference is **refreshed** (the current frame becomes it) when it is older than ``refresh_s`` (the lights,
  the pose drift away from it), when the parallax exceeds ``max_share`` of the work size's long side (the scene
  changed: a cut, a swung camera; that frame is not matted), when the frame size changes, and dropped when the
  current frame shows no one (the next frame with a person becomes it; state ``parallax-waiting`` with detail
  ``no one in the picture...``);
* any other per-frame error costs that frame its matte (it passes through, with the error), never the loop.

Not thread-safe: one worker calls it (the :class:`ParallaxSession` itself is stateless and shared).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cuematte.engine.compositing import Background, composite
from cuematte.engine.errors import CuematteError, NoSubjectError, SizeMismatchError
from cuematte.engine.parallax.session import NoParallaxError, ParallaxSession, PreparedView
from cuematte.live.matter import Processed
from cuematte.live.state import LiveState

log = logging.getLogger(__name__)

WAITING_DETAIL = "move your head or the camera slightly"
NO_PERSON_DETAIL = "no one in the picture: step into view"
MATTING_DETAIL = "matting"
SCENE_CHANGED_DETAIL = "scene changed: new reference; move your head or the camera slightly"
REFRESH_S = 5.0  # a reference older than this is replaced by the current frame
HOLD_S = 2.0  # the last good matte is reused for frames without parallax for this long
MAX_SHARE = 0.08  # parallax over this share of the work size's long side: the scene changed, new reference


@dataclass
class ParallaxProcessed(Processed):
    """:class:`Processed` plus the parallax loop's state and detail (wire names) and the measured parallax
    (px at the work size, None when not measured on this frame). ``matted``: a fresh matte of this frame;
    ``held``: composited with the last good matte."""

    state: LiveState = LiveState.PARALLAX_WAITING
    detail: str = WAITING_DETAIL
    parallax_px: float | None = None
    held: bool = False


@dataclass
class _Good:
    alpha: np.ndarray
    at: float


class ParallaxLive:
    """A reference frame and the last good matte for one live session (see the module's docstring)."""

    def __init__(self, session: ParallaxSession, *, refresh_s: float = REFRESH_S, hold_s: float = HOLD_S,
                 max_share: float = MAX_SHARE, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.refresh_s = refresh_s
        self.hold_s = hold_s
        self.max_share = max_share
        self.clock = clock
        self.reference: PreparedView | None = None  # segmented once, when taken
        self.reference_at = 0.0
        self.references = 0  # how many references were taken (refreshes included)
        self._good: _Good | None = None
        self.last_parallax: float | None = None

    def reset(self) -> None:
        self.reference = None
        self._good = None
        self.last_parallax = None

    def _take_reference(self, ref: PreparedView, now: float) -> None:
        self.reference, self.reference_at = ref, now
        self.references += 1

    def _wait(self, rgb: np.ndarray, background: Background, now: float, detail: str,
              parallax: float | None = None, error: str | None = None) -> ParallaxProcessed:
        """No fresh matte for this frame: the last good one if it is recent enough, else the frame itself."""
        good = self._good
        if good is not None and good.alpha.shape == rgb.shape[:2] and now - good.at <= self.hold_s:
            t0 = time.perf_counter()
            out = composite(rgb, good.alpha, rgb, background)
            ms = {"composite": (time.perf_counter() - t0) * 1e3}
            return ParallaxProcessed(out, matted=False, ms=ms, error=error, state=LiveState.PARALLAX_MATTING,
                                     detail=MATTING_DETAIL, parallax_px=parallax, held=True)
        return ParallaxProcessed(rgb, matted=False, error=error, state=LiveState.PARALLAX_WAITING, detail=detail,
                                 parallax_px=parallax)

    def process(self, rgb: np.ndarray, background: Background) -> ParallaxProcessed:
        """(H, W, 3) uint8 RGB -> the frame to show and the loop's state. Never raises for a frame."""
        now = self.clock()
        try:
            return self._process(rgb, background, now)
        except CuematteError as exc:
            return self._wait(rgb, background, now, WAITING_DETAIL, error=str(exc))
        except Exception as exc:  # a bug must cost this frame its matte, not the session its video
            log.exception("parallax matte failed")
            return self._wait(rgb, background, now, WAITING_DETAIL, error=f"internal error while matting: {exc}")

    def _process(self, rgb: np.ndarray, background: Background, now: float) -> ParallaxProcessed:
        ref = self.reference
        if ref is not None and ref.shape != rgb.shape:
            ref = self.reference = None  # the stream changed size: start over
            self._good = None
        if ref is None:
            candidate = self.session.prepare(rgb)
            if not candidate.has_person:
                return self._wait(rgb, background, now, NO_PERSON_DETAIL)
            self._take_reference(candidate, now)
            return self._wait(rgb, background, now, WAITING_DETAIL)
        try:
            m = self.session.matte(rgb, ref)
        except NoSubjectError:
            self.reference = None  # whoever comes back next is the new reference
            return self._wait(rgb, background, now, NO_PERSON_DETAIL)
        except NoParallaxError:
            if now - self.reference_at > self.refresh_s:
                self._take_reference(self.session.prepare(rgb), now)
            return self._wait(rgb, background, now, WAITING_DETAIL)
        except SizeMismatchError:  # cannot happen after the shape check; kept for safety
            self.reference = None
            return self._wait(rgb, background, now, WAITING_DETAIL)
        self.last_parallax = m.parallax_px
        if m.parallax_px > self.max_share * max(m.work_size):
            self._take_reference(self.session.prepare(rgb), now)
            self._good = None
            return self._wait(rgb, background, now, SCENE_CHANGED_DETAIL, parallax=m.parallax_px)
        t0 = time.perf_counter()
        out = composite(rgb, m.alpha, m.foreground, background)
        t1 = time.perf_counter()
        self._good = _Good(m.alpha, now)
        if now - self.reference_at > self.refresh_s:
            self._take_reference(self.session.prepare(rgb), now)
        ms = {f"parallax_{k}": v for k, v in m.times.items() if k != "total"}
        ms["composite"] = (t1 - t0) * 1e3
        return ParallaxProcessed(out, matted=True, ms=ms, state=LiveState.PARALLAX_MATTING, detail=MATTING_DETAIL,
                                 parallax_px=m.parallax_px)
