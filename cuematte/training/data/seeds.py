"""Seed namespaces: training seeds are small integers, evaluation seeds come from their own SeedSequence tree.

Training uses ``train_seed(i) == i`` for ``0 <= i < 2**62``. Evaluation seeds are drawn from
``SeedSequence(EVAL_ENTROPY, spawn_key=(split, i))`` and have bit 62 set, so no evaluation seed can ever be a
training seed, and each evaluation split (static / dynamic / video / parallax) is a fixed, reproducible list.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EvalSplit = Literal["static", "dynamic", "video", "parallax", "mixed"]

EVAL_ENTROPY = 0x6375656D_61747465  # "cuematte": the root of every evaluation seed
_EVAL_BIT = 1 << 62
_SPLIT_KEYS: dict[str, int] = {"static": 0, "dynamic": 1, "video": 2, "parallax": 3, "mixed": 4}


def train_seed(i: int) -> int:
    """The i-th training seed."""
    if not 0 <= i < _EVAL_BIT:
        raise ValueError(f"training index {i} out of range [0, 2**62)")
    return i


def eval_seed(i: int, split: EvalSplit = "mixed") -> int:
    """The i-th seed of an evaluation split: fixed forever, never a training seed."""
    if i < 0:
        raise ValueError("evaluation index must be >= 0")
    ss = np.random.SeedSequence(EVAL_ENTROPY, spawn_key=(_SPLIT_KEYS[split], i))
    low = int(ss.generate_state(1, np.uint64)[0]) & (_EVAL_BIT - 1)
    return _EVAL_BIT | low


def is_eval_seed(seed: int) -> bool:
    return seed >= _EVAL_BIT


def streams(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators for one sample, so each part (person, background, light, noise) draws
    from its own stream and changing one part's code leaves the others' randomness as it was."""
    if seed < 0:
        raise ValueError("seed must be >= 0")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
