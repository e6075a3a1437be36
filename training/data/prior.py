"""A person mask as an off-the-shelf segmenter (MediaPipe selfie segmentation and the like) would give it:
computed at low resolution, blurred, squashed by a soft threshold, so hair strands are lost or filled in as a
blob, edges sit a few pixels off, a raised hand is sometimes missed and a far background person sometimes
included, with an occasional false blob."""

from __future__ import annotations

import cv2
import numpy as np

from training.data.color import F32


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
