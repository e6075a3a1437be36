"""`cuematte matte` with the parallax cue, end to end on generated files and a random-init tiny model folder: the
stills of an image pair, a video's picked pair, and every bad input answered with one `error:` line and exit code 2.
The flash cue's own tests are tests/test_cli.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.clients.cli import main
from cuematte.engine.io import VideoWriter, read_image, write_image
from tests.test_parallax_engine import astronaut_pair, astronaut_view, texture, tiny_parallax_model

pytestmark = pytest.mark.filterwarnings("ignore::cuematte.engine.model.UntrainedModelWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_parallax_model(tmp_path_factory)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("parallax-inputs")
    v1, v0 = astronaut_pair()
    empty = texture(512, 512, seed=9)
    images = {"view1": v1, "view0": v0, "small": v0[:256, :320], "empty1": empty, "empty0": np.roll(empty, 4, 1)}
    out = {name: d / f"{name}.png" for name in images}
    for name, image in images.items():
        write_image(out[name], image)
    # 0.5 s at 12 fps: two frames without anyone, then the person walking right over a still background.
    with VideoWriter(d / "clip.mp4", (512, 512), 12) as w:
        for image in [empty, empty] + [astronaut_view((2 * k, 0))[0] for k in range(4)]:
            w.write(image)
    out["video"] = d / "clip.mp4"
    with VideoWriter(d / "still.mp4", (512, 512), 12) as w:  # a tripod: nothing moves
        for _ in range(4):
            w.write(v1)
    out["still"] = d / "still.mp4"
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_a_pair_writes_alpha_fg_and_composite(model_dir: Path, files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "matte", "--input", files["view1"], "--second-view", files["view0"], "--out-dir",
                         tmp_path, "--model", model_dir, "--background", "green", "--trimap-out")
    assert code == 0, err
    assert "matted view1.png (parallax" in out
    alpha, fg, trimap = (np.asarray(cv2.imread(str(tmp_path / f"view1_{name}.png"), cv2.IMREAD_UNCHANGED))
                         for name in ("alpha", "fg", "trimap"))
    comp = read_image(tmp_path / "view1_composite.png")
    assert alpha.shape == (512, 512) and fg.shape == (512, 512, 4) and comp.shape == (512, 512, 3)
    assert np.array_equal(fg[..., 3], alpha)
    assert (alpha[trimap == 255] == 255).all() and (alpha[trimap == 0] == 0).all()
    a = alpha.astype(np.float32)[..., None] / 255
    expected = a * cv2.cvtColor(fg[..., :3], cv2.COLOR_BGR2RGB) + (1 - a) * np.array([0, 177, 64])
    assert np.abs(comp - expected).max() <= 2


def test_a_video_picks_its_pair_and_writes_the_reference_stills(model_dir: Path, files: dict[str, Path],
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "matte", "--cue", "parallax", "--input", files["video"], "--out-dir", tmp_path,
                         "--model", model_dir)
    assert code == 0, err
    assert "picked frame 2 (0.17 s) as the reference and frame 5 (0.42 s) as the second view" in out, out
    assert "matted frame 2 of clip.mp4" in out
    assert read_image(tmp_path / "clip_composite.png").shape == (512, 512, 3)
    assert {p.name for p in tmp_path.iterdir()} == {"clip_alpha.png", "clip_fg.png", "clip_composite.png"}


def test_bad_inputs_are_one_error_line_and_exit_code_2(model_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    base: list[str | Path] = ["matte", "--out-dir", tmp_path / "out", "--model", model_dir]
    cases: list[tuple[list[str | Path], str]] = [
        ([*base, "--input", files["view1"], "--second-view", files["small"]],
         "the reference view is 512x512 but the second view is 320x256"),
        ([*base, "--input", files["view1"], "--second-view", files["view1"]], "the two views show no parallax"),
        ([*base, "--input", files["empty1"], "--second-view", files["empty0"]], "no one found in the reference view"),
        ([*base, "--input", files["view1"], "--second-view", tmp_path / "nope.png"], "second view not found"),
        ([*base, "--input", files["view1"], "--cue", "parallax"], "needs a second view"),
        ([*base, "--input", files["view1"]], "the flash cue needs --flash"),
        ([*base, "--input", files["view1"], "--second-view", files["view0"], "--cue", "flash"],
         "--second-view belongs to the parallax cue"),
        ([*base, "--input", files["view1"], "--second-view", files["view0"], "--flash", files["view0"]],
         "--flash and --noflash belong to the flash cue"),
        ([*base, "--input", files["video"], "--second-view", files["view0"]], "picks its own second view"),
        ([*base, "--input", files["still"], "--cue", "parallax"], "the video's first 4 frame(s) show no parallax"),
        ([*base, "--input", tmp_path, "--second-view", files["view0"]], "not a folder"),
        (["matte", "--out-dir", tmp_path / "out", "--model", tmp_path / "no-model", "--input", files["view1"],
          "--second-view", files["view0"]], "parallax model folder not found"),
    ]
    write_image(tmp_path / "some.png", read_image(files["view0"]))  # the folder case needs an image in it
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and message in lines[0], (message, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bench_times_one_parallax_patch(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "bench.json"
    assert main(["bench", "--parallax", str(model_dir), "--repeat", "3", "--warmup", "1", "--json", str(out)]) == 0
    assert "patch p50" in capsys.readouterr().out
    r = json.loads(out.read_text())["parallax_patch"]
    # The report's shape, not the speed: the figures are consistent statistics of the runs it made.
    assert r["repeat"] == 3 and r["min_ms"] <= r["p50_ms"] <= r["p95_ms"]
    assert r["patch"] == json.loads((model_dir / "model.json").read_text())["patch"]
