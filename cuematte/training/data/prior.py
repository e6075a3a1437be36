"""A person mask as an off-the-shelf segmenter (MediaPipe selfie segmentation and the like) would give it:
computed at low resolution, blurred, squashed by a soft threshold, so hair strands are lost or filled in as a
blob, edges sit a few pixels off, a raised hand is sometimes missed and a far background person sometimes
included, with an occasional false blob."""

from __future__ import annotations

import cv2
import numpy as np

from cuematte.training.data.color import F32


def person_prior(
    rng: np.random.Generator,
    alpha: F32,
    hands: F32,
    background_people: F32,
    p_miss_hand: float,
    p_other_person: float,
) -> F32:
    """(H, W) in [0, 1] from the GT ``alpha``, ``hands`` coverage and far people's coverage (all (H, W))."""
    h, w = alpha.shape
    target = alpha.copy()
    if hands.any() and rng.random() < p_miss_hand:
        target *= 1 - np.clip(hands * 1.5, 0, 1)
    if background_people.any() and rng.random() < p_other_person:
        target = np.maximum(target, background_people * rng.uniform(0.6, 1.0))
    # Segmenters run at ~256x144: work at that scale.
    f = max(1, round(w / rng.uniform(96, 256)))
    sw, sh = max(8, w // f), max(8, h // f)
    small = np.asarray(cv2.resize(target, (sw, sh), interpolation=cv2.INTER_AREA), np.float32)
    small = np.asarray(cv2.GaussianBlur(small, (0, 0), rng.uniform(0.4, 1.2)), np.float32)
    k = int(rng.integers(0, 3))
    if k:  # edges a little outside or inside
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        small = np.asarray(
            cv2.dilate(small, kernel) if rng.random() < 0.5 else cv2.erode(small, kernel), np.float32
        )
    # A smooth low-frequency bias makes errors spatially coherent (a shoulder under-, hair over-segmented).
    bias = cv2.resize(rng.normal(0, 0.12, (4, 6)).astype(np.float32), (sw, sh), interpolation=cv2.INTER_CUBIC)
    thresh, sharp = rng.uniform(0.35, 0.65), rng.uniform(4, 14)
    soft = 1 / (1 + np.exp(-(small + bias - thresh) * sharp))
    soft = (soft - soft.min()) / max(1e-6, float(soft.max() - soft.min()))  # full range like a real mask
    if rng.random() < 0.1:  # a false positive somewhere in the background
        c = (int(rng.integers(0, sw)), int(rng.integers(0, sh)))
        cv2.circle(soft, c, int(rng.integers(2, max(3, sh // 6))), float(rng.uniform(0.4, 1.0)), -1)
    out = cv2.resize(soft.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.asarray(out, np.float32), 0, 1)


# Kinds of gross failure and their relative weights.
FAILURE_WEIGHTS = {"missed": 0.15, "part": 0.45, "false": 0.40}


def segmenter_failure(rng: np.random.Generator, mask: F32, kinds: tuple[str, ...] = tuple(FAILURE_WEIGHTS)) -> F32:
    """(H, W) person mask in [0, 1] -> the same mask with one gross segmenter failure of one of ``kinds``
    (keys of :data:`FAILURE_WEIGHTS`).

    MediaPipe sometimes misses the subject (all of it, or a shoulder, the torso), or calls a wall, a monitor or
    a person behind the subject a person. :func:`person_prior`'s mild errors never teach a network that the mask
    can be that wrong, so it follows the mask wherever the mask is confident. These failures are drawn without
    looking at the image, so what can overrule them is another cue (the flash), not how a rendered person looks.
    """
    h, w = mask.shape
    weights = np.array([FAILURE_WEIGHTS[k] if k in kinds else 0.0 for k in FAILURE_WEIGHTS])
    kind = list(FAILURE_WEIGHTS)[int(rng.choice(len(weights), p=weights / weights.sum()))]
    if kind == "missed":
        return (mask * rng.uniform(0.0, 0.3)).astype(np.float32)
    # A part is cut around a point of the subject; a false region grows from a point outside it.
    ys, xs = np.nonzero(mask > 0.5) if kind == "part" else np.nonzero(mask < 0.5)
    if not len(ys):
        return mask
    i = int(rng.integers(len(ys)))
    cx, cy = int(xs[i]), int(ys[i])
    ax, ay = int(rng.uniform(0.08, 0.3) * w), int(rng.uniform(0.12, 0.45) * h)
    canvas = np.zeros((h, w), np.uint8)
    if kind == "false" and rng.random() < 0.5:  # a monitor, a door, a picture frame
        cv2.rectangle(canvas, (cx - ax, cy - ay), (cx + ax, cy + ay), 255, -1)
    else:
        cv2.ellipse(canvas, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    blob = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), max(1.0, 0.015 * h))
    if kind == "part":
        return (mask * (1 - blob * rng.uniform(0.7, 1.0))).astype(np.float32)
    return np.maximum(mask, blob * rng.uniform(0.6, 1.0)).astype(np.float32)
