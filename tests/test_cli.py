"""The CLI end to end on generated files: export -> matte (images, folder, video) -> bench, and every bad input
answered with a named error and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.clients.cli import main
from cuematte.clients.scenes import make_pair
from cuematte.engine.io import VideoReader, VideoWriter, read_image, write_image

pytestmark = pytest.mark.usefixtures("quiet_untrained")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    flash, noflash, _ = make_pair(240, 320, seed=11, shift=3, exposure=0.9)
    out = {"flash": d / "flash.png", "noflash": d / "noflash.png"}
    write_image(out["flash"], flash)
    write_image(out["noflash"], noflash)
    folder = d / "frames"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"f{i}.jpg", np.roll(noflash, 2 * i, axis=1))
    out["folder"] = folder
    with VideoWriter(d / "clip.mp4", (320, 240), 15) as w:
        for i in range(12):
            w.write(np.roll(noflash, i, axis=1))
    out["video"] = d / "clip.mp4"
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_matte_an_image_writes_alpha_fg_composite(lite_model_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matte", "--flash", files["flash"], "--input", files["noflash"], "--out-dir", tmp_path,
                       "--model", lite_model_dir, "--background", "green", "--trimap-out")
    assert code == 0, out
    alpha = cv2.imread(str(tmp_path / "noflash_alpha.png"), cv2.IMREAD_UNCHANGED)
    fg = cv2.imread(str(tmp_path / "noflash_fg.png"), cv2.IMREAD_UNCHANGED)
    comp = read_image(tmp_path / "noflash_composite.png")
    assert alpha.shape == (240, 320) and fg.shape == (240, 320, 4) and comp.shape == (240, 320, 3)
    assert np.array_equal(fg[..., 3], alpha)  # the cut-out carries the matte as its alpha channel
    a = alpha.astype(np.float32)[..., None] / 255
    expected = a * cv2.cvtColor(fg[..., :3], cv2.COLOR_BGR2RGB) + (1 - a) * np.array([0, 177, 64])
    assert np.abs(comp - expected).max() <= 2  # composite = alpha * F + (1 - alpha) * green
    trimap = cv2.imread(str(tmp_path / "flash_trimap.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(trimap)) <= {0, 128, 255} and (trimap == 255).any()


def test_matte_a_folder(lite_model_dir: Path, files: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matte", "--flash", files["flash"], "--noflash", files["noflash"], "--input",
                       files["folder"], "--out-dir", tmp_path, "--model", lite_model_dir)
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*_composite.png")) == [f"f{i}_composite.png" for i in range(3)]
    assert "matted 3 image(s)" in out


def test_matte_a_generated_clip(lite_model_dir: Path, files: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matte", "--flash", files["flash"], "--input", files["video"], "--out-dir", tmp_path,
                       "--model", lite_model_dir, "--background", "#ff0000")
    assert code == 0, out
    for name in ("clip_alpha.mp4", "clip_composite.mp4"):
        with VideoReader(tmp_path / name) as r:
            frames = list(r)
        assert len(frames) == 12 and frames[0].shape == (240, 320, 3)


def test_bench_reports_every_stage(lite_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    code, _, _ = run(capsys, "bench", "--model", lite_model_dir, "--sizes", "320x180",
                       "--warmup", "1", "--repeat", "3", "--threads", "1", "--json", out_json)
    assert code == 0
    payload = json.loads(out_json.read_text())
    assert {"cpu", "cores", "onnxruntime"} <= payload["machine"].keys()
    stages = {r["stage"] for r in payload["records"]}
    assert {"trimap", "flash", "frame", "total_first_frame"} <= stages
    for r in payload["records"]:
        # The report's shape, not its speed (speed is what `cuematte bench` prints, never a test threshold).
        assert r["size"] == "320x180" and r["n"] >= 3 and all(np.isfinite(r[k]) for k in ("p50_ms", "p90_ms"))


def _bad_inputs(tmp: Path, files: dict[str, Path], model: Path) -> list[tuple[list[str | Path], str]]:
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp / "garbage.png"
    garbage.write_bytes(b"definitely not a png")
    grey = tmp / "grey.png"
    cv2.imwrite(str(grey), np.zeros((240, 320), np.uint8))
    rgba = tmp / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((240, 320, 4), np.uint8))
    small = tmp / "small.png"
    write_image(small, read_image(files["flash"])[:120, :160])
    corrupt = tmp / "corrupt.mp4"
    corrupt.write_bytes(files["video"].read_bytes()[:200])
    broken_model = tmp / "broken_model"
    shutil.copytree(model, broken_model)
    (broken_model / "flash.onnx").unlink()
    base = ["matte", "--out-dir", tmp / "out", "--model", model]

    def recipe(line: str) -> Path:
        """A recipe file of the lite config plus ``line``."""
        path = tmp / f"recipe{abs(hash(line))}.toml"
        path.write_text(f"config = 'lite'\n{line}\n")
        return path

    return [
        ([*base, "--flash", tmp / "missing.png", "--input", files["noflash"]], "not found"),
        ([*base, "--flash", empty, "--input", files["noflash"]], "empty file"),
        ([*base, "--flash", garbage, "--input", files["noflash"]], "not a readable image"),
        ([*base, "--flash", grey, "--input", files["noflash"]], "grayscale"),
        ([*base, "--flash", rgba, "--input", files["noflash"]], "4 channels"),
        ([*base, "--flash", small, "--input", files["noflash"]], "flash frame is 160x120 but no-flash frame is 320x"),
        ([*base, "--flash", files["noflash"], "--input", files["noflash"]], "no brighter"),
        ([*base, "--flash", files["flash"], "--input", corrupt], "video"),
        (["matte", "--out-dir", tmp / "out", "--model", broken_model, "--flash", files["flash"], "--input",
          files["noflash"]], "missing its flash graph"),
        ([*base, "--flash", files["flash"], "--input", files["noflash"], "--background", "#12"], "#RRGGBB"),
        (["bench", "--model", model, "--sizes", "big"], "WIDTHxHEIGHT"),
        (["export", "--config", "lite", "--out-dir", tmp / "x"], "--random-init"),
        (["train", "--out", tmp / "run"], "--recipe is needed"),
        (["train", "--recipe", "no-such", "--out", tmp / "run"], "flash-lite"),
        (["train", "--recipe", recipe("guidance = true"), "--out", tmp / "run"], "set person_mask and flash_prior"),
        (["train", "--recipe", recipe("flash_skip = true"), "--out", tmp / "run"], "unknown fields: flash_skip"),
        (["train", "--recipe", recipe("mask_failure_p = 1.5"), "--out", tmp / "run"], "not a share in [0, 1]"),
        (["train", "--recipe", recipe("camouflage_p = -0.2"), "--out", tmp / "run"], "not a share in [0, 1]"),
        (["train", "--recipe", recipe("drift_p = 2.0"), "--out", tmp / "run"], "not a share in [0, 1]"),
        (["train", "--recipe", recipe("mask_failure_kinds = ['part', 'blob']"), "--out", tmp / "run"],
         "choose from missed, part, false"),
    ]


def test_bad_inputs_are_named_errors_with_exit_code_2(lite_model_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in _bad_inputs(tmp_path, files, lite_model_dir):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and message in err, (message, err)
        assert "Traceback" not in err


def test_console_script_exit_code_and_message(files: dict[str, Path], tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: a bad file is one line on stderr and exit code 2."""
    exe = Path(sys.executable).with_name("cuematte")
    proc = subprocess.run([str(exe), "matte", "--flash", str(tmp_path / "nope.png"), "--input", str(files["noflash"]),
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: flash frame not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_a_full_disk_is_a_named_error_and_leaves_no_half_written_file(
        lite_model_dir: Path, files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """The kernel refuses writes past a file-size limit (RLIMIT_FSIZE, as a full disk refuses them): matte
    says so in one line, exits 2, and leaves no truncated output behind."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, 2_000))

    out = tmp_path / "out"
    out.mkdir()
    exe = Path(sys.executable).with_name("cuematte")
    proc = subprocess.run([str(exe), "matte", "--flash", str(files["flash"]), "--input", str(files[kind]),
                           "--out-dir", str(out), "--model", str(lite_model_dir)],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    for f in out.iterdir():  # what was written is whole: nothing partial, every image readable
        assert ".partial" not in f.name
        if f.suffix == ".png":
            assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED) is not None, f


def _without(module: str, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter where ``module`` cannot be imported (an extra not installed)."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from cuematte.clients.cli import main\n"
            f"sys.exit(main({command!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_command_whose_extra_is_missing_names_it(files: dict[str, Path]) -> None:
    """The base install is the engine and the CLI; a command that needs an extra says which one."""
    for module, extra, command in (
        ("aiortc", "server", ["serve", "--port", "0"]),
        ("pyvirtualcam", "virtualcam", ["virtualcam", "--flash", str(files["flash"]), "--input", str(files["video"])]),
    ):
        done = _without(module, command)
        assert done.returncode == 2, done.stderr
        assert f"needs the {extra} extra" in done.stderr and f"pip install 'cuematte[{extra}]'" in done.stderr
