"""Matting a portrait from two views with a small camera move (the parallax cue, paper Sec. 4.1-4.5).

    session = ParallaxSession()            # shipped parallax model, ONNX Runtime CPU, MediaPipe segmenter
    result = session.matte(view1, view0)   # view1: the reference, whose matte comes back
    result.alpha, result.foreground, result.parallax_px

Both views are shrunk to the model's work size; the person segmenter's mask of each becomes a guidance trimap
(certain person, certain background, an unknown band at the edge); DIS flow from the reference to the other view,
filled per layer from the trimap, aligns the other view once on the background and once on the person; the
network runs on the patches covering the unknown band, merged with a Gaussian window; the result comes back to
the input size with the guidance's certain pixels re-imposed, so they stay exactly 0 or 1.

A pair without parallax (the same photo twice, a camera that only turned) carries no cue: that is a
:class:`NoParallaxError`, not a matte of a single image. The session holds no per-call state: one session may
serve several threads at once (the server does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from cuematte.engine.cues.guidance import GuidanceParams, build_guidance
from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, PersonSegmenter, trimap_one_hot
from cuematte.engine.errors import InputError, NoSubjectError, SizeMismatchError
from cuematte.engine.frames import check_frame, fit_within, resize
from cuematte.engine.parallax.flow import branch_inputs, estimate_flow, layer_flows
from cuematte.engine.parallax.model import DEFAULT_GUIDANCE, INPUTS, SIZE_MULTIPLE, WORK_SIDE, ParallaxModel
from cuematte.engine.parallax.patches import merge_patches, patch_boxes

log = logging.getLogger(__name__)

MIN_PARALLAX_PX = 0.5  # person-vs-background motion at the work size under which a pair carries no cue
MIN_SUBJECT_SHARE = 0.005  # certain person under this share of the reference view: no one to matte
PICK_SIDE = 320  # pick_pair measures at this long side
PICK_SECONDS = 3.0  # a video without a second view: its pair is picked from this much of its start
MAX_PICK_SHARE = 0.08  # pick_pair skips frames whose parallax passes this share of the long side (a new scene)
ALPHA_EPS = 1.0 / 255  # below this alpha the colour alpha*F / alpha says nothing: the view's colour is kept


class NoParallaxError(InputError):
    """The two views show no usable parallax: the person and the background moved alike (or not at all)."""


@dataclass(frozen=True)
class ParallaxMatte:
    """The reference view's matte, at its input size."""

    alpha: np.ndarray  # (H, W) float32 in [0, 1]; exactly 0 / 1 where the guidance is certain
    foreground: np.ndarray  # (H, W, 3) uint8 RGB colour F (alpha*F / alpha; the view's colour where alpha ~ 0)
    trimap: np.ndarray  # (H, W) uint8 0/128/255: the guidance, nearest-upsampled from the work size
    parallax_px: float  # |median person flow - median background flow| at the work size
    work_size: tuple[int, int]  # (h, w) the views were matted at
    patches: int  # network patches run
    times: dict[str, float] = field(default_factory=dict)  # milliseconds per stage, and "total"


@dataclass(frozen=True)
class PreparedView:
    """A view at the model's work size with its guidance trimap (:meth:`ParallaxSession.prepare`): computed once
    for a view that is matted against again and again, such as the live loop's reference frame, instead of
    segmenting it anew for every frame."""

    shape: tuple[int, ...]  # the full view's (H, W, 3)
    small: np.ndarray  # (h, w, 3) uint8 RGB at the work size
    trimap: np.ndarray  # (h, w) uint8 0/128/255, the segmenter's guidance

    @property
    def has_person(self) -> bool:
        """A confident person and some certain background around them: a view worth keeping as a reference."""
        return _has_subject(self.trimap) and bool((self.trimap == BG).any())


class PairPick(NamedTuple):
    """Which two frames of a video :func:`pick_pair` chose."""

    reference: int  # the first frame with a person: the one matted
    other: int  # the frame with the most parallax against it
    parallax_px: float  # that parallax, in pixels at the work size


def _mediapipe(threads: int | None = None) -> PersonSegmenter:
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter

    return MediaPipeSegmenter(threads=threads)


def _guidance(segmenter: PersonSegmenter, view: np.ndarray, params: GuidanceParams) -> np.ndarray:
    """(h, w, 3) uint8 -> the segmenter's guidance trimap (h, w) uint8 0/128/255 (no flash)."""
    return build_guidance(segmenter.segment(view), None, params)


def _has_subject(trimap: np.ndarray) -> bool:
    return float((trimap == FG).mean()) >= MIN_SUBJECT_SHARE


def measure_parallax(flow: np.ndarray, trimap: np.ndarray) -> float | None:
    """(H, W, 2) flow and the reference's (H, W) trimap -> |median flow over certain person - median flow over
    certain background| in pixels, or None when either layer has no certain pixel. Medians: the unknown band and
    the flow's outliers do not move it."""
    fg, bg = trimap == FG, trimap == BG
    if not fg.any() or not bg.any():
        return None
    return float(np.linalg.norm(np.median(flow[fg], axis=0) - np.median(flow[bg], axis=0)))


def _pad_to(shape: tuple[int, int], patch: int) -> tuple[int, int]:
    """The padded (H', W'): at least one patch and a multiple of the graph's size rule."""
    def side(n: int) -> int:
        return max(patch, -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return side(shape[0]), side(shape[1])


def _pad(image: np.ndarray, shape: tuple[int, int], value: int | None = None) -> np.ndarray:
    """Pad an (h, w[, C]) array at the bottom and right to ``shape``: mirrored (images) or ``value`` (trimaps)."""
    ph, pw = shape[0] - image.shape[0], shape[1] - image.shape[1]
    pads = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    if value is None:
        return np.pad(image, pads, mode="reflect")
    return np.pad(image, pads, mode="constant", constant_values=value)


class ParallaxSession:
    """Two-view matting with one parallax model. ``model``: a :class:`ParallaxModel`, a model folder or None
    (the shipped default). ``segmenter``: a person segmenter (None: MediaPipe, whose ONNX Runtime sessions are
    shared by every call). ``min_parallax``: pixels at the work size under which a pair is refused."""

    def __init__(self, model: ParallaxModel | str | Path | None = None, segmenter: PersonSegmenter | None = None, *,
                 threads: int | None = None, min_parallax: float = MIN_PARALLAX_PX) -> None:
        self.model = model if isinstance(model, ParallaxModel) else ParallaxModel(model, threads)
        self.segmenter = segmenter if segmenter is not None else _mediapipe(threads)
        self.params = self.model.info.guidance
        self.min_parallax = min_parallax

    def prepare(self, view: np.ndarray) -> PreparedView:
        """(H, W, 3) uint8 RGB -> the view at the work size with its guidance, to pass as ``view0`` of
        :meth:`matte` as often as wanted."""
        check_frame(view, "second view")
        work = fit_within(view.shape[:2], self.model.info.work_side)
        # A copy either way: a prepared view outlives the caller's frame buffer (decoders reuse theirs).
        small = cv2.resize(view, work[::-1], interpolation=cv2.INTER_AREA) if work != view.shape[:2] else view.copy()
        return PreparedView(view.shape, small, _guidance(self.segmenter, small, self.params))

    def matte(self, view1: np.ndarray, view0: np.ndarray | PreparedView) -> ParallaxMatte:
        """The matte of the reference ``view1`` from it and ``view0``, both (H, W, 3) uint8 RGB of one size
        (``view0`` may come :meth:`prepare`d).

        Raises :class:`SizeMismatchError` (sizes differ), :class:`NoSubjectError` (no confident person in the
        reference) and :class:`NoParallaxError` (the person and the background moved alike between the views).
        """
        t_start = t0 = time.perf_counter()
        times: dict[str, float] = {}

        def lap(stage: str) -> None:
            nonlocal t0
            now = time.perf_counter()
            times[stage] = (now - t0) * 1000.0
            t0 = now

        check_frame(view1, "reference view")
        if not isinstance(view0, PreparedView):
            check_frame(view0, "second view")
        if view1.shape != view0.shape:
            raise SizeMismatchError(f"the reference view is {view1.shape[1]}x{view1.shape[0]} but the second view is "
                                    f"{view0.shape[1]}x{view0.shape[0]}; take both with the same camera and mode")
        info = self.model.info
        full = view1.shape[:2]
        work = fit_within(full, info.work_side)
        v1 = cv2.resize(view1, work[::-1], interpolation=cv2.INTER_AREA) if work != full else view1
        trimap1 = _guidance(self.segmenter, v1, self.params)
        if not _has_subject(trimap1):
            raise NoSubjectError("no one found in the reference view: the parallax cue mattes a person, who must be "
                                 "clearly in the picture")
        prepared = view0 if isinstance(view0, PreparedView) else self.prepare(view0)
        v0, trimap0 = prepared.small, prepared.trimap
        lap("segment")
        flow = estimate_flow(v1, v0)
        parallax = measure_parallax(flow, trimap1)
        if parallax is None:
            raise NoParallaxError("the reference view shows no certain background around the person to measure the "
                                  "parallax against; step back so that some background shows")
        if parallax < self.min_parallax:
            raise NoParallaxError(
                f"the two views show no parallax ({parallax:.2f} px between the person and the background at "
                f"{work[1]}x{work[0]}; at least {self.min_parallax:g} px needed): move the camera a few centimetres "
                "sideways between the views, and do not send the same photo twice")
        flow_fg, flow_bg = layer_flows(flow, trimap1)
        lap("flow")
        scale = np.float32(1 / 255)
        inputs = branch_inputs(v1 * scale, v0 * scale, trimap1, trimap0, flow_fg, flow_bg)
        alpha_w, premul_w, patches = self.run_inputs(inputs)
        lap("graph")
        alpha, premul, trimap = self._to_full(alpha_w, premul_w, trimap1, view1)
        fg = np.where(alpha[..., None] > ALPHA_EPS, premul / np.maximum(alpha, ALPHA_EPS)[..., None],
                      view1 * scale)
        foreground = (np.clip(fg, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        lap("post")
        times["total"] = (time.perf_counter() - t_start) * 1000.0
        return ParallaxMatte(alpha=alpha, foreground=foreground, trimap=trimap, parallax_px=parallax, work_size=work,
                             patches=patches, times=times)

    def run_inputs(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """:func:`branch_inputs` at any (h, w) (images float32 in [0, 1], trimaps uint8 0/128/255) -> (alpha (h, w),
        premultiplied foreground (h, w, 3), patches run): the network on the patches covering ``trimap``'s unknown
        band, the trimap's verdict where no patch ran. No resizing: :meth:`matte` calls it at the work size (the
        evaluation calls it with its own trimaps)."""
        info = self.model.info
        trimap1 = inputs["trimap"]
        h, w = trimap1.shape
        padded = _pad_to((h, w), info.patch)
        # (3, H', W') per input: images mirrored past the edge, trimaps unknown there (no false certainty).
        planes = {name: _pad(inputs[name], padded).transpose(2, 0, 1) for name in INPUTS[:4]}
        for name in INPUTS[4:]:
            planes[name] = trimap_one_hot(_pad(inputs[name], padded, UNKNOWN))
        need = np.zeros(padded, bool)
        need[:h, :w] = trimap1 == UNKNOWN
        boxes = patch_boxes(padded, need, info.patch, info.overlap)
        p = info.patch
        outputs = []
        for y, x in boxes:
            feeds = {name: np.ascontiguousarray(plane[None, :, y : y + p, x : x + p], np.float32)
                     for name, plane in planes.items()}
            alpha, premul = self.model.run(feeds)
            outputs.append(np.concatenate([alpha[0], premul[0]], axis=0))
        merged, weight = merge_patches(outputs, boxes, padded, p)
        certain = (trimap1 == FG).astype(np.float32)
        if merged.shape[0] == 0:  # no unknown pixel at all: the guidance is the matte
            return certain, inputs["view"] * certain[..., None], 0
        alpha = merged[0, :h, :w]
        premul = merged[1:, :h, :w].transpose(1, 2, 0)
        uncovered = weight[:h, :w] == 0
        alpha[uncovered] = certain[uncovered]
        premul[uncovered] = inputs["view"][uncovered] * certain[uncovered][:, None]
        return alpha, premul, len(boxes)

    @staticmethod
    def _to_full(alpha: np.ndarray, premul: np.ndarray, trimap: np.ndarray,
                 view: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Work-size alpha (h, w), premultiplied fg (h, w, 3) and trimap -> the same at the view's (H, W), linear
        for the matte, nearest for the trimap, whose certain pixels are then re-imposed: alpha exactly 0 / 1 and
        alpha*F exactly 0 / the view there."""
        size = view.shape[:2]
        if alpha.shape != size:
            alpha = cv2.resize(alpha, size[::-1], interpolation=cv2.INTER_LINEAR)
            premul = cv2.resize(premul, size[::-1], interpolation=cv2.INTER_LINEAR)
            trimap = resize(trimap, size, nearest=True)
        alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
        premul = np.clip(premul, 0.0, alpha[..., None]).astype(np.float32)  # F in [0, 1]: alpha*F <= alpha
        fg, bg = trimap == FG, trimap == BG
        alpha[fg], alpha[bg] = 1.0, 0.0
        premul[fg] = view[fg] * np.float32(1 / 255)
        premul[bg] = 0.0
        return alpha, premul, trimap

    def pick_pair(self, frames: Iterable[np.ndarray]) -> PairPick:
        """:func:`pick_pair` with this session's segmenter, guidance, work side and threshold."""
        return pick_pair(frames, self.segmenter, params=self.params, work_side=self.model.info.work_side,
                         min_parallax=self.min_parallax)


def pick_pair(frames: Iterable[np.ndarray], segmenter: PersonSegmenter | None = None, *,
              params: GuidanceParams = DEFAULT_GUIDANCE, work_side: int = WORK_SIDE,
              min_parallax: float = MIN_PARALLAX_PX, side: int = PICK_SIDE) -> PairPick:
    """Two views from one video without a second view: the reference is the first frame with a person, the
    other the later frame with the most parallax against it (measured cheaply: segmenter and DIS at ``side``).

    ``frames``: (H, W, 3) uint8 RGB, consumed one at a time and only kept at ``side`` (pass the video's first
    :data:`PICK_SECONDS`). Frames whose parallax passes :data:`MAX_PICK_SHARE` of the long side (a cut, a swung
    camera) or without a person are skipped. Raises :class:`NoSubjectError` when no frame has a person and
    :class:`NoParallaxError` when no later frame moves enough (``min_parallax`` px at the work size).
    """
    segmenter = segmenter if segmenter is not None else _mediapipe()
    ref: tuple[int, np.ndarray, np.ndarray] | None = None  # index, small frame, trimap
    shape: tuple[int, ...] | None = None
    size, scale, limit = (0, 0), 1.0, 0.0
    best: tuple[int, float] | None = None
    seen = 0
    for i, frame in enumerate(frames):
        check_frame(frame, f"frame {i}")
        seen += 1
        if shape is None:
            shape = frame.shape
            size = fit_within(frame.shape[:2], side)
            scale = min(work_side, max(frame.shape[:2])) / max(size)  # pick-size px -> work-size px
            limit = MAX_PICK_SHARE * max(size)
        elif frame.shape != shape:
            raise SizeMismatchError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, not {shape[1]}x{shape[0]}")
        small = resize(frame, size)
        trimap = _guidance(segmenter, small, params)
        if not _has_subject(trimap):
            continue
        if ref is None:
            if (trimap == BG).any():
                ref = (i, small, trimap)
            continue
        px = measure_parallax(estimate_flow(ref[1], small), ref[2])
        if px is None or px > limit:
            continue
        if best is None or px > best[1]:
            best = (i, px)
    if ref is None:
        raise NoSubjectError(f"no one found in the {seen} frame(s) looked at: the parallax cue mattes a person, who "
                             "must be clearly in the picture with some background around")
    if best is None or best[1] * scale < min_parallax:
        most = f"at most {best[1] * scale:.2f} px" if best is not None else "no later frame with the person"
        raise NoParallaxError(f"the video's first {seen} frame(s) show no parallax against frame {ref[0]} ({most}; "
                              f"at least {min_parallax:g} px needed): move the camera a few centimetres sideways "
                              "while filming, or pass a second view")
    log.info("picked frames %d and %d: parallax %.2f px", ref[0], best[0], best[1] * scale)
    return PairPick(ref[0], best[0], best[1] * scale)


__all__ = [
    "MIN_PARALLAX_PX",
    "PICK_SECONDS",
    "NoParallaxError",
    "PairPick",
    "ParallaxMatte",
    "ParallaxSession",
    "measure_parallax",
    "pick_pair",
]
