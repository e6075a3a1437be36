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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cuematte.engine.band import band_rects, refine_band
from cuematte.engine.cues.align import SubjectWarp, estimate_subject_warp
from cuematte.engine.cues.guidance import GuidanceParams, build_guidance, guidance_input, trimap_from_one_hot
from cuematte.engine.cues.tracking import SubjectTracker
from cuematte.engine.cues.trimap import (
    FlashCue,
    PersonSegmenter,
    TrimapParams,
    build_flash_trimap,
    trimap_for_model,
    trimap_one_hot,
)
from cuematte.engine.errors import FlashNotSetError, ModelError, NoSubjectError
from cuematte.engine.frames import check_frame, fit_within, resize, shrink
from cuematte.engine.model import FlashModel
from cuematte.engine.refine import Workspace, frame_result, hold_guidance, opaque_foreground
from cuematte.engine.temporal import TemporalSmoother

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Matte:
    """One frame's result, at the input frame's size. ``alpha`` is read-only at every size (where the refinement
    runs in the unknown band only it is also the smoother's memory of the frame): copy it to change it."""

    alpha: np.ndarray  # (H, W) float32 in [0, 1], read-only
    foreground: np.ndarray  # (H, W, 3) uint8 RGB, background colour removed at the edges
    # guidance models: the frame's guidance trimap (h, w) uint8 0/128/255 at the CMN grid (engine.cues.guidance)
    guidance: np.ndarray | None = None


@dataclass
class _FlashState:
    cache: dict[str, np.ndarray]  # the flash graph's outputs: flash_features (1, N, C') = T^f [, flash_prior]
    cue: FlashCue
    # The flash graph's feeds, kept so the uncached path can recompute T^f: flash (1, 3, h, w) float32 and
    # flash_trimap (1, 3, h, w) one-hot, area-averaged to the CMN grid.
    inputs: dict[str, np.ndarray]
    subject: SubjectWarp | None = None  # align_flash models: how the flash inputs were warped onto the subject
    # align_flash models with a cached prior: follows the person from the flash's frame to each frame
    tracker: SubjectTracker | None = None


@dataclass(frozen=True)
class FramePrep:
    """One frame made ready for the per-frame graph (:meth:`MattingSession.prepare`)."""

    frame: np.ndarray  # (H, W, 3) uint8 RGB as given
    small: np.ndarray  # (h, w, 3) the frame at the working size (at most max_side), where the graph refines
    cmn: np.ndarray  # (h, w, 3) uint8 the frame at the CMN grid
    feeds: dict[str, np.ndarray]  # the per-frame graph's inputs
    guidance: np.ndarray | None  # guidance models: the guidance trimap at the CMN grid
    person: np.ndarray | None  # the segmenter's person probability at the CMN grid (models that use it)
    flash: _FlashState  # the cached flash it was prepared with
    generation: int  # MattingSession.generation when it was prepared


def flash_trimap(feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The per-frame feeds -> the flash's trimap on this frame (h, w) uint8: the (moved) prior's trimap
    channels."""
    return trimap_from_one_hot(feeds["flash_prior"][0, 3:6])


def fit_subject(flash: np.ndarray, noflash: np.ndarray, segmenter: PersonSegmenter, cmn_size: tuple[int, int],
                start: np.ndarray) -> tuple[SubjectWarp, np.ndarray, np.ndarray]:
    """The person's flash -> no-flash warp as an ``align_flash`` session fits it in ``set_flash`` (and training
    fits it for its samples): on the person the segmenter finds in the no-flash frame at the CMN grid. Returns
    the warp, that no-flash frame at the CMN grid (h, w, 3) uint8, the reference later frames are tracked to,
    and the segmenter's (h, w) person probability in it, which the tracking checks its fits against.
    """
    reference = resize(noflash, cmn_size)
    person = segmenter.segment(reference)
    return estimate_subject_warp(flash, noflash, person, start), reference, person


def create_segmenter(kind: str | PersonSegmenter | None, threads: int | None = None) -> PersonSegmenter | None:
    """'mediapipe' (default, pretrained person segmenter), 'grabcut' / None (weight-free), or an object."""
    if kind is None or kind == "grabcut":
        return None
    if isinstance(kind, str):
        if kind != "mediapipe":
            raise ModelError(f"unknown segmenter {kind!r}; choose 'mediapipe' or 'grabcut'")
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter

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

    def __init__(self, model: str | Path | FlashModel | None = None, *, backend: str = "cpu",
                 threads: int | None = None, segmenter: str | PersonSegmenter | None = "mediapipe",
                 max_side: int = 1280, trimap_params: TrimapParams | None = None, temporal: float = 0.0,
                 track_subject: bool = True, guidance_params: GuidanceParams | None = None) -> None:
        self.model = model if isinstance(model, FlashModel) else FlashModel(model, backend=backend, threads=threads)
        # This session's executions of the two graphs (its own context and stream on TensorRT).
        self.flash_graph, self.frame_graph = self.model.session_graphs()
        self.segmenter = create_segmenter(segmenter, threads)
        if self.model.info.person_mask and self.segmenter is None:
            raise ModelError(f"model {self.model.info.path} takes a per-frame person mask; use segmenter='mediapipe'")
        if self.model.info.align_flash and self.segmenter is None:
            raise ModelError(f"model {self.model.info.path} takes its flash aligned on the person the segmenter "
                             "finds; use segmenter='mediapipe'")
        self.max_side = min(max_side, self.model.max_side or max_side)
        self.trimap_params = trimap_params or TrimapParams()
        inner, outer = self.model.info.guidance_bands
        self.guidance_params = guidance_params or GuidanceParams(
            inner=inner, outer=outer, confirm_background=self.model.info.guidance_confirm_bg,
            fill_pockets=self.model.info.guidance_fill_pockets)
        self.times = StageTimes()
        # Motion-aware alpha smoothing across consecutive matte() calls (0 = off); restarts with every flash.
        self.smoother = TemporalSmoother(strength=temporal)
        # align_flash models: follow the person from the flash's frame to each frame and move the cached flash
        # prior with them (the person keeps moving after the one flash; the model expects the prior on them).
        self.track_subject = track_subject
        self._flash: _FlashState | None = None
        self._generation = 0
        self.graph_runs = 0  # per-frame graph runs (a rate for stats)
        self._workspace = Workspace()  # the guided filter's full-resolution buffers, kept between frames
        # Guided-filter models: refine, smooth and hold only in the guidance's unknown band (engine.band: the
        # same result as every pixel, in half the time at 1280x720 in the service). False: every pixel.
        self.band_refinement = True

    # -- state --------------------------------------------------------------------------------------------
    @property
    def has_flash(self) -> bool:
        return self._flash is not None

    def _flash_state(self) -> _FlashState:
        if self._flash is None:
            raise FlashNotSetError("no flash yet: call set_flash(flash, noflash) first")
        return self._flash

    @property
    def flash_cue(self) -> FlashCue:
        return self._flash_state().cue

    @property
    def subject_warp(self) -> SubjectWarp | None:
        """How the flash inputs were warped onto the subject (``align_flash`` models), else None."""
        return self._flash_state().subject

    def reset(self) -> None:
        """Forget the cached flash features; the next :meth:`matte` needs a new :meth:`set_flash`."""
        self._flash = None
        self._generation += 1
        self.smoother.reset()

    # -- the cached half ---------------------------------------------------------------------------------------
    def set_flash(self, flash: np.ndarray, noflash: np.ndarray, *, require_subject: bool = False) -> FlashCue:
        """Build the flash trimap and run the flash graph once; cache T^f. Replaces any earlier flash.

        flash, noflash: (H, W, 3) uint8 RGB of the same size. ``require_subject``: raise :class:`NoSubjectError`
        when neither the flash nor the segmenter located anyone (a live call wants "no one found", not a
        see-through matte of an empty room). On error the previous flash state is kept.
        """
        t0 = time.perf_counter()
        check_frame(flash, "flash frame")
        check_frame(noflash, "no-flash frame")
        size = fit_within(flash.shape[:2], self.max_side)
        flash_s = resize(flash, size)
        noflash_s = resize(noflash, size) if noflash.shape == flash.shape else noflash
        # 1. Measure the flash (no model policy), 2. apply this model's policy to what was measured.
        measured = build_flash_trimap(flash_s, noflash_s, self.segmenter, self.trimap_params)
        if require_subject and measured.method == "unknown":
            raise NoSubjectError("no one found in the flash frame: sit in front of the camera and flash again")
        cue = trimap_for_model(measured, reads_flash=self.model.info.flash_prior)
        flash_in, trimap_in = flash_s, cue.trimap
        subject = tracker = None
        if self.model.info.align_flash:
            # The person moved between the two frames: such a model takes its flash where the person is now.
            assert self.segmenter is not None
            subject, reference, reference_person = fit_subject(flash_s, noflash_s, self.segmenter,
                                                               self.model.info.cmn_size, cue.alignment.warp)
            flash_in, trimap_in = subject.to_noflash(flash_s), subject.to_noflash(cue.trimap, nearest=True)
            if self.track_subject and self.model.info.flash_prior:
                tracker = SubjectTracker(reference, reference_person=reference_person)
        t1 = self.times.record("trimap", t0)
        cmn = self.model.info.cmn_size
        one_hot = np.ascontiguousarray(trimap_one_hot(trimap_in).transpose(1, 2, 0))
        inputs = {"flash": to_nchw(resize(flash_in, cmn)),
                  "flash_trimap": np.ascontiguousarray(resize(one_hot, cmn).transpose(2, 0, 1)[None])}
        cache = self._run_flash(inputs)
        self.times.record("flash", t1)
        self._flash = _FlashState(cache=cache, cue=cue, inputs=inputs, subject=subject, tracker=tracker)
        self._generation += 1
        self.smoother.reset()
        return cue

    def _run_flash(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.flash_graph.run(inputs)
        cache = {name: out[name] for name in self.model.info.spec.cached}
        for arr in cache.values():  # read-only: a GPU backend may keep them on the device between frames
            arr.flags.writeable = False
        return cache

    # -- the per-frame half -------------------------------------------------------------------------------------
    def matte(self, frame: np.ndarray, *, reuse_flash: bool = True) -> Matte:
        """Alpha and foreground of one no-flash frame (H, W, 3) uint8 RGB.

        ``reuse_flash=False`` recomputes T^f from the stored flash inputs first (the uncached, first-frame
        path; same result, used by tests and the benchmark). Its steps, :meth:`prepare` (with
        :meth:`add_cues`), :meth:`run_graph` and :meth:`finish`, are public for callers that run the graph
        elsewhere (:class:`cuematte.engine.pipelined.PipelinedSession`).
        """
        prep = self.prepare(frame, reuse_flash=reuse_flash)
        return self.finish(prep, self.run_graph(prep))

    @property
    def generation(self) -> int:
        """Counts flashes and resets: a graph output made from another generation's feeds is stale."""
        return self._generation

    def prepare(self, frame: np.ndarray, *, reuse_flash: bool = True, cues: bool = True) -> FramePrep:
        """One frame (H, W, 3) uint8 RGB -> the per-frame graph's feeds and what :meth:`finish` needs:
        resizes, the segmenter, then (``cues``, else left to :meth:`add_cues`) the subject tracking and the
        guidance (stage ``pre``)."""
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
        cmn = self.model.info.cmn_size
        # Antialiased as the model was trained (FNFNet.to_cmn averages areas): OpenCV's INTER_AREA takes 1.5-1.8 ms
        # here at 640x360 and 1280x720, shrink's bilinear step and 2x box 0.35-0.4 ms, within 1-4 grey levels of it.
        small_c = shrink(small, cmn)
        spec = self.model.info.spec
        feeds = {"frame_cmn": to_nchw(small_c), **cache}
        if spec.frame_input("frame"):  # graphs that refine to full resolution themselves
            feeds["frame"] = to_nchw(small)
        person: np.ndarray | None = None
        if spec.frame_input("person_mask") or state.tracker is not None:
            assert self.segmenter is not None
            # The segmenter sees the frame at its own aspect (its square model for a portrait or square frame);
            # its mask comes back at the CMN grid.
            t_seg = time.perf_counter()
            person = self.segmenter.segment(small, size=cmn)
            self.times.record("pre_segment", t_seg)  # parts of "pre", so a regression shows where
            if spec.frame_input("person_mask"):
                feeds["person_mask"] = person[None, None].astype(np.float32)
        prep = FramePrep(frame=frame, small=small, cmn=small_c, feeds=feeds, guidance=None, person=person,
                         flash=state, generation=self._generation)
        if cues:
            prep = self.add_cues(prep, self.times)
        self.times.record("pre", t0)
        return prep

    def add_cues(self, prep: FramePrep, times: StageTimes | None = None) -> FramePrep:
        """A frame prepared without its cues -> with them: the cached prior moved onto where the person is now
        by the subject tracking (stage ``pre_track`` in ``times``), the flash's say on this frame and the
        guidance. It advances the flash's tracker: one caller at a time per flash (PipelinedSession runs it on
        its graph thread)."""
        state, feeds = prep.flash, dict(prep.feeds)
        spec = self.model.info.spec
        if prep.person is None:
            return prep
        if state.tracker is not None:
            t0 = time.perf_counter()
            feeds["flash_prior"] = state.tracker.move(state.cache["flash_prior"], prep.cmn, prep.person)
            if times is not None:
                times.record("pre_track", t0)
        guidance: np.ndarray | None = None
        if spec.frame_input("guidance"):
            # The (moved) prior's trimap channels: the flash's say on this frame, beside the segmenter's.
            guidance = build_guidance(prep.person, flash_trimap(feeds), self.guidance_params)
            feeds["guidance"] = guidance_input(guidance)
        return replace(prep, feeds=feeds, guidance=guidance)

    def run_graph(self, prep: FramePrep) -> dict[str, np.ndarray]:
        """The per-frame graph on a prepared frame (stage ``graph``; counted in :attr:`graph_runs`)."""
        t0 = time.perf_counter()
        out = self.frame_graph.run(prep.feeds)
        self.times.record("graph", t0)
        self.graph_runs += 1
        return out

    def finish(self, prep: FramePrep, out: dict[str, np.ndarray]) -> Matte:
        """The graph's outputs for ``prep`` (or another frame's, moved onto this one: ``PipelinedSession``) ->
        the frame's :class:`Matte`: refinement at the working size, temporal smoothing, the guidance held, back
        to the frame's size (stages ``refine`` and ``post``)."""
        t0 = time.perf_counter()
        frame, small, guidance = prep.frame, prep.small, prep.guidance
        if self.band_refinement and guidance is not None and "coef_a" in out and small.shape == frame.shape:
            rects = band_rects(guidance, out["coef_a"].shape[2:], small.shape[:2])
            if rects is not None:  # the same result as below, computed in the unknown band only
                alpha, fg = refine_band(small, out["coef_a"][0], out["coef_b"][0], guidance, rects, self.smoother)
                alpha.flags.writeable = False  # also the smoother's memory of this frame: not to be changed
                self.times.ms["post"] = 0.0  # one fused stage, "refine"
                self.times.record("refine", t0)
                return Matte(alpha=alpha, foreground=fg, guidance=guidance)
        alpha, fg = frame_result(out, small, workspace=self._workspace)
        t1 = self.times.record("refine", t0)
        alpha = self.smoother(small, alpha)
        if guidance is not None:  # composed once, after the smoothing: certain pixels come out exactly 0 or 1
            hold_guidance(alpha, guidance, self._workspace)
        h, w = frame.shape[:2]
        if small.shape[:2] != (h, w):
            alpha = resize(alpha, (h, w))
            fg = resize(fg, (h, w))
        fg = opaque_foreground(frame, alpha, fg, self._workspace)  # at the frame's size: a sharp interior
        self.times.record("post", t1)
        alpha = np.clip(alpha, 0.0, 1.0, dtype=np.float32)
        alpha.flags.writeable = False  # as the band's (above): the same contract at every size
        return Matte(alpha=alpha, foreground=fg, guidance=guidance)
