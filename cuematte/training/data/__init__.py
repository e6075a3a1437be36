"""Procedural flash/no-flash portrait data (numpy + OpenCV; torch only in ``cuematte.training.data.dataset``).

    from cuematte.training.data import SynthConfig, render_sample, eval_seed
    s = render_sample(eval_seed(0, "dynamic"))      # FlashSample, bit-identical for the same seed and config

What a sample is: a person-like subject (``person``) before an indoor room, a procedural texture or a photo
shipped with scikit-image (``background``), lit by the room and, in the flash frame, by a phone torch or the
screen going white with inverse-square falloff, sheen, glints and a cast shadow (``lighting``), seen by a
webcam with auto-exposure, white balance, vignetting, shot/read noise, 8-bit output and optional JPEG
(``camera``); the subject moves a little and the camera may shake between the two frames (``motion``), the
background may change (``dynamics``: walkers, moving objects, monitors, lamps, room light, sway, pan), and
``prior`` imitates an off-the-shelf person segmenter. ``render`` puts it together for pairs, clips and
parallax pairs (a virtual camera move over a near subject and a far background plane); ``parallax`` makes the
two-view model's training items, their cache and the parallax evaluation layout; ``seeds`` keeps training and
evaluation seeds apart; ``contact_sheet`` and ``make_eval`` are the command-line tools, ``io`` the file layout.
"""

from cuematte.training.data.config import ParallaxConfig, SequenceConfig, SynthConfig
from cuematte.training.data.render import render_parallax_pair, render_sample, render_sequence
from cuematte.training.data.samples import FlashSample, FlashSequence, ParallaxSample
from cuematte.training.data.seeds import eval_seed, is_eval_seed, train_seed

__all__ = [
    "FlashSample",
    "FlashSequence",
    "ParallaxConfig",
    "ParallaxSample",
    "SequenceConfig",
    "SynthConfig",
    "eval_seed",
    "is_eval_seed",
    "render_parallax_pair",
    "render_sample",
    "render_sequence",
    "train_seed",
]
