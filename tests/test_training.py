"""The training loop: the loss goes down on a fixed batch, and a resumed run continues where it stopped."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cuematte.engine.errors import InputError

torch = pytest.importorskip("torch")


def _tiny_config(tmp_path: Path, steps: int) -> object:
    from cuematte.training.train import TrainConfig

    return TrainConfig(config="lite", steps=steps, batch_size=2, lr=2e-3, size=(144, 256), cache_samples=4,
                       eval_samples=8, eval_every=1000, ckpt_every=3, threads=2, cmn_fraction=0.0)


def test_training_steps_lower_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    from cuematte.training.cache import CacheSpec, build_cache
    from cuematte.training.losses import fnf_loss
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model
    from cuematte.training.train import Batches, forward

    cfg = _tiny_config(tmp_path, 10)
    cache = build_cache(tmp_path / "c.npy", CacheSpec(n=4, size=(144, 256), split="train"), workers=1)
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


def test_camouflaged_cache_is_its_own_and_keeps_the_mattes(tmp_path: Path) -> None:
    from cuematte.training.cache import FIELDS, CacheSpec, build_cache

    spec = CacheSpec(n=2, size=(144, 256), split="train")
    plain = build_cache(tmp_path / "p.npy", spec, workers=1)
    camo = build_cache(tmp_path / "c.npy", replace(spec, camouflage=1.0), workers=1)
    assert json.loads((tmp_path / "c.json").read_text())["camouflage"] == 1.0
    assert (spec.stem, replace(spec, camouflage=1.0).stem) == ("train-144x256-2", "train-144x256-2-camo1")
    assert np.array_equal(plain[..., FIELDS["alpha"]], camo[..., FIELDS["alpha"]])
    assert not np.array_equal(plain[..., FIELDS["fg"]], camo[..., FIELDS["fg"]])
    # A cache of the other kind at the same path is rendered again, not reused.
    again = build_cache(tmp_path / "p.npy", replace(spec, camouflage=1.0), workers=1)
    assert np.array_equal(np.asarray(again), np.asarray(camo))


def test_drifted_cache_keeps_the_frame_to_matte_and_builds_the_trimap_from_the_reference(tmp_path: Path) -> None:
    from cuematte.training.cache import CHANNELS, CUE_FIELDS, FIELDS, REFERENCE, CacheSpec, build_cache, build_cue_cache

    spec = CacheSpec(n=3, size=(144, 256), split="train")
    drift_spec = replace(spec, drift=1.0)
    assert drift_spec.stem == "train-144x256-3-drift1" and "drift" not in spec.meta()
    plain = build_cache(tmp_path / "p.npy", spec, workers=1)
    drifted = build_cache(tmp_path / "d.npy", drift_spec, workers=1)
    assert plain.shape[-1] == CHANNELS and drifted.shape[-1] == REFERENCE.stop
    for name in ("noflash", "alpha", "fg", "bg", "prior"):  # the no-flash ablation sees the same samples
        assert np.array_equal(plain[..., FIELDS[name]], drifted[..., FIELDS[name]]), name
    assert not np.array_equal(drifted[..., REFERENCE], drifted[..., FIELDS["noflash"]])
    # The engine's trimap comes from the flash and its reference, as set_flash builds it: where it calls
    # foreground, the subject stood at the flash, not (only) where it stands now.
    cues = build_cue_cache(tmp_path / "d-cues.npy", drifted)
    tri = np.asarray(cues[..., CUE_FIELDS["engine_trimap"].start])
    flash_alpha = np.asarray(drifted[..., FIELDS["flash_alpha"].start]) / 255.0
    alpha = np.asarray(drifted[..., FIELDS["alpha"].start]) / 255.0
    fg = tri == 255
    assert fg.any()
    assert flash_alpha[fg].mean() > 0.9 and flash_alpha[fg].mean() > alpha[fg].mean()


def test_train_then_resume_continues_the_run(tmp_path: Path) -> None:
    from cuematte.training.checkpoint import read_metadata
    from cuematte.training.train import train

    run = tmp_path / "run"
    train(_tiny_config(tmp_path, 3), run)  # type: ignore[arg-type]
    assert read_metadata(run / "last.safetensors")["step"] == 3
    with (run / "log.jsonl").open("a") as f:  # a step logged after the last checkpoint, then the run was killed
        f.write(json.dumps({"step": 4, "total": 1.0}) + "\n")
    train(_tiny_config(tmp_path, 5), run, resume=True)  # type: ignore[arg-type]
    assert read_metadata(run / "last.safetensors")["step"] == 5
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert json.loads((run / "train.json").read_text())["steps"] == 5
    with pytest.raises(InputError, match="at step 5 already"):
        train(_tiny_config(tmp_path, 4), run, resume=True)  # type: ignore[arg-type]


def test_cli_resume_finishes_the_run_as_set_up_unless_given_more_steps(tmp_path: Path) -> None:
    from cuematte.clients.cli import main

    run = tmp_path / "run"
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("config = 'lite'\nsize = [144, 256]\ncache_samples = 4\nbatch_size = 2\nsteps = 4000\n")
    tiny = ["train", "--recipe", str(recipe), "--out", str(run), "--threads", "2"]
    assert main([*tiny, "--steps", "2"]) == 0
    assert main([*tiny, "--resume"]) == 0  # no --steps: the run's own 2, not the recipe's 4000
    saved = json.loads((run / "train.json").read_text())
    assert saved["steps"] == 2 and len((run / "log.jsonl").read_text().splitlines()) == 2
    assert main([*tiny, "--resume", "--steps", "3"]) == 0  # extended by one step
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main([*tiny, "--resume", "--steps", "1"]) == 2  # cannot go back: a named error, not a crash
    assert json.loads((run / "train.json").read_text())["extra"]["recipe"] == "tiny"


def test_curves_plot_one_run_and_compare_several(tmp_path: Path) -> None:
    import cv2

    from cuematte.training.curves import main as curves

    for name, scale in (("a", 1.0), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": s, "total": 2.0 / (s + 1)} | ({"eval_mse": scale * 0.02 / (s + 1)} if s % 5 == 4 else {})
                for s in range(30)]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert curves([str(tmp_path / "a")]) == 0
    assert curves([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "runs.png")]) == 0
    for png in (tmp_path / "a" / "curve.png", tmp_path / "runs.png"):
        img = cv2.imread(str(png))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_engine_cues_feed_the_batches(tmp_path: Path) -> None:
    """The engine-cue cache holds MediaPipe's mask and the engine's flash trimap per sample; with
    ``engine_cue_p = 1`` every person mask and flash trimap of a batch is the engine's own."""
    from dataclasses import replace

    import numpy as np

    from cuematte.training.cache import CUE_FIELDS, FIELDS, CacheSpec, build_cache, build_cue_cache
    from cuematte.training.train import Batches, TrainConfig

    cache = build_cache(tmp_path / "c.npy", CacheSpec(n=4, size=(144, 256), split="train"), workers=1)
    cues = build_cue_cache(tmp_path / "c-cues.npy", cache)
    assert cues.shape == (4, 144, 256, 2) and cues.dtype == np.uint8
    trimaps = cues[..., CUE_FIELDS["engine_trimap"].start]
    assert set(np.unique(trimaps)) <= {0, 128, 255} and (trimaps == 255).any()
    assert build_cue_cache(tmp_path / "c-cues.npy", cache) is not None  # found again, not recomputed
    cfg = TrainConfig(batch_size=4, engine_cue_p=1.0)
    with pytest.raises(ValueError, match="engine-cue cache"):
        Batches(cache, cfg)
    batch = Batches(cache, cfg, cues).get(0, torch.device("cpu"))
    flipped = not torch.equal(batch["noflash"], torch.from_numpy(np.array(cache[..., FIELDS["noflash"]]))
                              .permute(0, 3, 1, 2).float() / 255)
    mp = torch.from_numpy(np.array(cues[..., CUE_FIELDS["mp_mask"]])).permute(0, 3, 1, 2).float() / 255
    tri = torch.from_numpy(trimaps.copy())
    if flipped:
        mp, tri = mp.flip(-1), tri.flip(-1)
    assert torch.equal(batch["prior"], mp)
    assert torch.equal(batch["flash_trimap"].argmax(1), (tri // 127).long())
    # The trimap share on its own: engine trimaps, imitation masks.
    batch = Batches(cache, TrainConfig(batch_size=4, engine_cue_p=0.0, engine_trimap_p=1.0), cues).get(0,
                                                                                                  torch.device("cpu"))
    imitation = torch.from_numpy(np.array(cache[..., FIELDS["prior"]])).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(batch["prior"], imitation.flip(-1) if flipped else imitation)
    assert torch.equal(batch["flash_trimap"].argmax(1), (tri // 127).long())
    # Segmenter failures: only the imitation masks change, the rest of the batch is the same as without them.
    plain_cfg = TrainConfig(batch_size=4, engine_cue_p=0.0, engine_trimap_p=1.0)
    plain = Batches(cache, plain_cfg, cues).get(3, torch.device("cpu"))
    failed = Batches(cache, replace(plain_cfg, mask_failure_p=1.0), cues).get(3, torch.device("cpu"))
    assert all(torch.equal(plain[k], failed[k]) for k in plain if k != "prior")
    changed = (plain["prior"] - failed["prior"]).abs().flatten(1).gt(0.5).float().mean(1)
    assert bool((changed > 0.005).all()) and failed["prior"].min() >= 0 and failed["prior"].max() <= 1
    # The no-flash ablation: the flash branch sees an all-unknown trimap.
    ablation = Batches(cache, replace(plain_cfg, flash_cue=False), cues).get(0, torch.device("cpu"))
    assert bool((ablation["flash_trimap"][:, 1] == 1).all())
    from cuematte.training.losses import fnf_loss
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model
    from cuematte.training.train import forward

    net = build_model(get_config("lite", person_mask=True, flash_prior=True))
    assert torch.isfinite(fnf_loss(forward(net, batch), batch, "full")["total"])
    with pytest.raises(ValueError, match="person mask"):
        net(batch["noflash"], batch["flash"], batch["flash_trimap"])


def test_aligned_flash_lies_on_the_subject_in_the_batches(tmp_path: Path) -> None:
    """``align_flash``: each sample's flash-geometry fields (flash, its matte, the engine trimap) are warped by
    its fitted subject warp, so the flash's matte lies closer to the frame's; the frame to matte, its mattes and
    mask stay as they were, and so does the no-flash ablation's batch."""
    from cuematte.training.cache import (
        ALIGN_VERSION,
        CUE_FIELDS,
        FIELDS,
        CacheSpec,
        build_align_cache,
        build_cache,
        build_cue_cache,
    )
    from cuematte.training.train import Batches, TrainConfig

    cache = build_cache(tmp_path / "c.npy", CacheSpec(n=4, size=(144, 256), split="train"), workers=1)
    cues = build_cue_cache(tmp_path / "c-cues.npy", cache)
    warps = build_align_cache(tmp_path / "c-align.npy", cache)
    assert warps.shape == (4, 2, 3) and json.loads((tmp_path / "c-align.json").read_text())["align"] == ALIGN_VERSION
    assert np.array_equal(build_align_cache(tmp_path / "c-align.npy", cache), warps)  # found again
    flash_alpha = np.asarray(cache[..., FIELDS["flash_alpha"].start]) / 255.0
    alpha = np.asarray(cache[..., FIELDS["alpha"].start]) / 255.0
    from cuematte.engine.cues.align import SubjectWarp

    moved = np.stack([SubjectWarp(warp=w, kind="cached").to_noflash(f) for w, f in zip(warps, flash_alpha,
                                                                                          strict=True)])
    assert ((moved - alpha) ** 2).mean() < 0.5 * ((flash_alpha - alpha) ** 2).mean()

    cfg = TrainConfig(batch_size=4, person_mask=True, flash_prior=True, engine_trimap_p=1.0)
    with pytest.raises(ValueError, match="subject warps"):
        Batches(cache, replace(cfg, align_flash=True), cues)
    cpu = torch.device("cpu")
    plain = Batches(cache, cfg, cues).get(1, cpu)
    aligned = Batches(cache, replace(cfg, align_flash=True), cues, warps).get(1, cpu)
    for k in ("noflash", "alpha", "fg", "bg", "prior"):
        assert torch.equal(plain[k], aligned[k]), k
    flipped = not torch.equal(plain["noflash"], torch.from_numpy(np.array(cache[..., FIELDS["noflash"]]))
                              .permute(0, 3, 1, 2).float() / 255)
    stored = np.asarray(cache[..., FIELDS["flash_alpha"].start])  # uint8, warped as the batches warp it
    want_alpha = torch.from_numpy(np.stack([SubjectWarp(warp=w, kind="cached").to_noflash(np.ascontiguousarray(f))
                                            for w, f in zip(warps, stored, strict=True)]))[:, None].float() / 255
    assert torch.equal(aligned["flash_alpha"], want_alpha.flip(-1) if flipped else want_alpha)
    tri = np.stack([SubjectWarp(warp=w, kind="cached").to_noflash(np.ascontiguousarray(t), nearest=True)
                    for w, t in zip(warps, np.asarray(cues[..., CUE_FIELDS["engine_trimap"].start]), strict=True)])
    tri_t = torch.from_numpy(tri // 127).long()
    assert torch.equal(aligned["flash_trimap"].argmax(1), tri_t.flip(-1) if flipped else tri_t)
    ablation = replace(cfg, flash_cue=False)
    assert all(torch.equal(a, b) for a, b in zip(Batches(cache, ablation, cues).get(1, cpu).values(),
                                                 Batches(cache, replace(ablation, align_flash=True), cues,
                                                         warps).get(1, cpu).values(), strict=True))


def test_branch_continues_another_run_under_a_new_recipe(tmp_path: Path) -> None:
    """``branch_from``: a new run starts at another's step, weights and optimizer state, with its own recipe
    (here the flash aligned on the subject, which the checkpoint then carries to the export); a different
    network, an occupied folder or too few steps are named errors."""
    from cuematte.training.checkpoint import load_checkpoint, read_metadata
    from cuematte.training.train import train

    base = replace(_tiny_config(tmp_path, 3), person_mask=True, flash_prior=True)  # type: ignore[type-var]
    source = tmp_path / "source"
    train(base, source)
    branch = tmp_path / "branch"
    train(replace(base, steps=5, align_flash=True), branch, branch_from=source)
    net, meta = load_checkpoint(branch / "last.safetensors")
    assert int(meta["step"]) == 5 and net.cfg.align_flash
    assert not load_checkpoint(source / "last.safetensors")[0].cfg.align_flash  # the source is left as it was
    assert [json.loads(line)["step"] for line in (branch / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    saved = json.loads((branch / "train.json").read_text())
    assert saved["align_flash"] and saved["extra"]["branched_from"] == {"run": str(source), "step": 3}
    train(replace(base, steps=6), branch, resume=True)  # a branch resumes under its own recipe
    assert int(read_metadata(branch / "last.safetensors")["step"]) == 6
    assert load_checkpoint(branch / "last.safetensors")[0].cfg.align_flash
    with pytest.raises(InputError, match="holds a run already"):
        train(replace(base, steps=5), branch, branch_from=source)
    with pytest.raises(InputError, match="person_mask"):
        train(replace(base, steps=5, person_mask=False), tmp_path / "other", branch_from=source)
    with pytest.raises(InputError, match="at step 3 already"):
        train(replace(base, steps=2), tmp_path / "short", branch_from=source)


@pytest.mark.parametrize("confirm", [False, True])
def test_guidance_batches_are_the_engines_and_the_loss_sees_the_composed_alpha(tmp_path: Path, confirm: bool) -> None:
    """A guidance run's batches carry the guidance the session would build from the same mask and flash
    trimap under the same rule, and its alpha equals the guidance wherever the guidance is certain (no gradient
    reaches there)."""
    import cv2

    from cuematte.engine.cues.guidance import GuidanceParams, build_guidance, trimap_from_one_hot
    from cuematte.engine.cues.trimap import BG, FG
    from cuematte.training.cache import CacheSpec, build_cache
    from cuematte.training.models.fnfnet import build_model
    from cuematte.training.train import Batches, TrainConfig, forward

    cache = build_cache(tmp_path / "c.npy", CacheSpec(n=4, size=(144, 256), split="train"), workers=1)
    cfg = TrainConfig(batch_size=2, person_mask=True, flash_prior=True, guidance=True, mask_failure_p=0.5,
                      guidance_confirm_bg=confirm)
    assert cfg.net_config.guidance_confirm_bg is confirm
    batch = Batches(cache, cfg).get(1, torch.device("cpu"))
    g = batch["guidance"]
    assert g.shape == (2, 3, 144, 256) and torch.equal(g.sum(1), torch.ones(2, 144, 256))
    for b in range(2):
        mask = batch["prior"][b, 0].numpy()
        tri = trimap_from_one_hot(batch["flash_trimap"][b].numpy())
        want = build_guidance(cv2.resize(mask, (256, 144), interpolation=cv2.INTER_AREA), tri,
                              GuidanceParams(confirm_background=confirm))
        assert np.array_equal(trimap_from_one_hot(g[b].numpy()), want)
    torch.manual_seed(0)
    net = build_model(cfg.net_config)
    out = forward(net, batch)
    fg, bg = g[:, 2:3].bool(), g[:, 0:1].bool()
    assert bool((out["alpha"][fg] == 1).all()) and bool((out["alpha"][bg] == 0).all())
    out["alpha"].sum().backward()  # d(alpha)/d(weights) flows only through the unknown band
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and any(bool(gr.abs().sum() > 0) for gr in grads)
    assert (trimap_from_one_hot(g[0].numpy()) == FG).any() and (trimap_from_one_hot(g[0].numpy()) == BG).any()


def test_recipes_load_and_name_unknown_fields(tmp_path: Path) -> None:
    from cuematte.training.train import load_recipe

    shipped = load_recipe("flash-lite")
    assert shipped.guidance and shipped.align_flash and shipped.person_mask and shipped.flash_prior
    assert shipped.extra["recipe"] == "flash-lite" and shipped.size == (288, 512)
    bad = tmp_path / "bad.toml"
    bad.write_text("config = 'lite'\nwarp_drive = true\n")
    with pytest.raises(InputError, match="warp_drive"):
        load_recipe(bad)
    with pytest.raises(InputError, match="flash-lite"):
        load_recipe("no-such-recipe")
    bad.write_text("config = \n")
    with pytest.raises(InputError, match="TOML"):
        load_recipe(bad)
    bad.write_text("config = 'lite'\nguidance_confirm_bg = true\n")
    with pytest.raises(InputError, match="set guidance"):
        load_recipe(bad)


def test_init_from_starts_another_config_from_the_tensors_it_shares(tmp_path: Path) -> None:
    """``init_from``: the shared-trunk network starts from a split-decoder run's encoders, correlation module and
    trimap decoder (same names and shapes) at step 0; only its own trunk is new. Other inputs are a named error."""
    from cuematte.training.checkpoint import load_checkpoint
    from cuematte.training.train import train

    base = replace(_tiny_config(tmp_path, 2), person_mask=True)  # type: ignore[type-var]
    source = tmp_path / "source"
    train(base, source)
    donor = load_checkpoint(source / "last.safetensors")[0].state_dict()
    shared = tmp_path / "shared"
    train(replace(base, config="lite-shared", steps=1, lr=0.0), shared, init_from=source)  # lr 0: weights stay
    net, meta = load_checkpoint(shared / "last.safetensors")
    assert net.cfg.decoder == "shared" and int(meta["step"]) == 1
    state = net.state_dict()
    for key in ("noflash_encoder.body.conv_stem.weight", "flash_layers.0.attn.in_proj_weight",
                "trimap_head.weight", "guided.coef.0.weight"):
        assert torch.equal(state[key], donor[key]), key
    origin = json.loads((shared / "train.json").read_text())["extra"]["initialised_from"]
    assert origin["run"] == str(source) and origin["new"] == ["shared_groups", "shared_head"]
    assert origin["tensors"] == sum(1 for k in state if not k.startswith(("shared_groups", "shared_head")))
    with pytest.raises(InputError, match="holds a run already"):
        train(replace(base, config="lite-shared", steps=1), shared, init_from=source)
    with pytest.raises(InputError, match="person_mask"):
        train(replace(base, config="lite-shared", steps=1, person_mask=False), tmp_path / "other", init_from=source)
