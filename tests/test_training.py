"""Synthetic data, the training loop (loss goes down, resume continues) and the evaluation CLI's pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.synth import TRAIN_SEED_LIMIT, SynthConfig, eval_seed, render_sample, train_seed  # noqa: E402

SMALL = SynthConfig(size=(144, 256))


def test_render_is_deterministic_and_in_range() -> None:
    a, b, c = render_sample(7, SMALL), render_sample(7, SMALL), render_sample(8, SMALL)
    for name in ("noflash", "flash", "alpha", "foreground", "background", "flash_alpha", "person_prior"):
        x = getattr(a, name)
        assert np.array_equal(x, getattr(b, name)), name
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1, name
        assert x.shape[:2] == (144, 256)
    assert not np.array_equal(a.noflash, c.noflash)
    assert (a.alpha > 0.01).any() and (a.alpha < 0.99).any()


def test_eval_seeds_never_meet_train_seeds() -> None:
    assert max(train_seed(i) for i in range(10_000)) < TRAIN_SEED_LIMIT <= min(eval_seed(i) for i in range(100))


def test_flash_lights_the_person_more_than_the_background() -> None:
    gains_fg, gains_bg = [], []
    for seed in range(6):
        s = render_sample(seed, SMALL)
        both_fg = (s.alpha > 0.99) & (s.flash_alpha > 0.99)
        both_bg = (s.alpha < 0.01) & (s.flash_alpha < 0.01)
        ratio = (s.flash.mean(-1) + 0.02) / (s.noflash.mean(-1) + 0.02)
        gains_fg.append(np.median(ratio[both_fg]))
        gains_bg.append(np.median(ratio[both_bg]))
    assert np.mean(gains_fg) > np.mean(gains_bg) + 0.1


def test_composite_is_consistent() -> None:
    s = render_sample(3, SynthConfig(size=(144, 256), p_pseudo_flash=0.0))
    recon = s.alpha[..., None] * s.foreground + (1 - s.alpha[..., None]) * s.background
    assert np.abs(recon - s.noflash).mean() < 0.05  # noise and JPEG only


def _tiny_config(tmp_path: Path, steps: int) -> object:
    from training.train import TrainConfig

    return TrainConfig(config="lite", steps=steps, batch_size=2, lr=2e-3, size=(144, 256), cache_samples=4,
                       eval_samples=8, eval_every=1000, ckpt_every=3, threads=2, cmn_fraction=0.0)


def test_training_steps_lower_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    from training.cache import CacheSpec, build_cache
    from training.losses import fnf_loss
    from training.models.config import get_config
    from training.models.fnfnet import build_model
    from training.train import Batches, forward

    cfg = _tiny_config(tmp_path, 10)
    cache = build_cache(tmp_path / "c.npy", CacheSpec(n=4, size=(144, 256), seed_base=0), workers=1)
    batch = Batches(cache, cfg).get(0, torch.device("cpu"))  # type: ignore[arg-type]
    torch.manual_seed(0)
    net = build_model(get_config("lite"))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    losses = []
    for _ in range(12):
        loss = fnf_loss(forward(net, batch), batch, "full")["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_train_then_resume_continues_the_run(tmp_path: Path) -> None:
    from training.checkpoint import read_metadata
    from training.train import train

    run = tmp_path / "run"
    train(_tiny_config(tmp_path, 3), run)  # type: ignore[arg-type]
    assert read_metadata(run / "last.safetensors")["step"] == 3
    train(_tiny_config(tmp_path, 5), run, resume=True)  # type: ignore[arg-type]
    assert read_metadata(run / "last.safetensors")["step"] == 5
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
