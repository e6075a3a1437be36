"""A model folder: ``model.json`` + ``flash.onnx`` + ``frame.onnx`` (written by ``cuematte export``)."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cuematte.engine.backends.onnxruntime import OrtGraph, preload_cuda_libraries, resolve_providers
from cuematte.engine.cues.guidance import GUIDANCE_BANDS
from cuematte.engine.errors import BackendError, ModelError, ModelNotFoundError
from cuematte.engine.graphspec import GraphSpec

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "flash-lite"
FORMAT = "cuematte-flash-model"
# 2: the graphs take their CMN-grid images ready-made (frame_cmn; flash and flash_trimap at the CMN grid) instead
# of shrinking in-graph with an antialiased Resize, which TensorRT cannot build.
FORMAT_VERSION = 2

HOW_TO_GET_A_MODEL = (
    "train and export one: `cuematte train --recipe flash-lite-real --out runs/flash-lite-real` then "
    "`cuematte export --checkpoint runs/flash-lite-real/last.safetensors --out-dir MODEL_DIR`, "
    "or for latency work `cuematte export --config lite --random-init --out-dir MODEL_DIR`; "
    "then pass --model MODEL_DIR"
)


# Config switches no shipped model used, removed after the git tag named beside each (which still runs them).
REMOVED_SWITCHES = {"flash_evidence": "experiments-2026-12-04", "flash_skip": "experiments-2026-12-04",
                    "person_features": "person-features-2026-12-04"}


def removed_switches_message(on: list[str]) -> str:
    """What to say about a model or run that turns on switches this version no longer has."""
    tags = sorted({REMOVED_SWITCHES[k] for k in on})
    return f"{', '.join(on)}, which this version no longer runs (git tag {' / '.join(tags)} does)"


class Graph(Protocol):
    """A runnable graph with named inputs and outputs (ONNX Runtime or a native TensorRT engine)."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class UntrainedModelWarning(UserWarning):
    """The loaded model was exported from random weights: fine for latency work, useless for mattes."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` says about a model folder."""

    path: Path
    name: str
    trained: bool
    cmn_size: tuple[int, int]  # (H, W) the flash graph works at
    person_mask: bool
    flash_prior: bool  # the flash graph also outputs ``flash_prior``, a per-frame graph input
    align_flash: bool  # flash inputs are warped onto the subject first (cuematte.engine.cues.align.SubjectWarp)
    guidance: bool  # the frame graph takes the guidance trimap and refines only its unknown region
    guidance_bands: tuple[float, float]  # (inner, outer) band of the guidance it was trained with
    guidance_confirm_bg: bool  # certain background needs the flash's agreement once it found the subject
    guidance_fill_pockets: bool  # unsure pockets the certain person encloses are person too
    flash_features_shape: tuple[int, int]  # (N, C')
    spec: GraphSpec  # both graphs' inputs and outputs, by name (model.json "io", written by export)
    manifest: dict[str, Any]


def _pair(values: Any) -> tuple[float, float]:
    first, second = values
    return float(first), float(second)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (graphs are recorded by it in model.json)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_dir(model: str | Path | None) -> Path:
    """The folder to load: the one given, else the shipped default; a named error if there is none."""
    if model is None:
        if not (DEFAULT_MODEL / "model.json").is_file():
            raise ModelNotFoundError(
                f"no model given and no default model ships with this install; {HOW_TO_GET_A_MODEL}"
            )
        return DEFAULT_MODEL
    return Path(model)


def read_model_info(model_dir: Path) -> ModelInfo:
    """Validate a model folder (manifest present and readable, both graphs present) and describe it."""
    if not model_dir.is_dir():
        raise ModelError(f"model folder not found: {model_dir}")
    manifest_path = model_dir / "model.json"
    if not manifest_path.is_file():
        raise ModelError(f"{model_dir} has no model.json; it is not a cuematte model folder ({HOW_TO_GET_A_MODEL})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ModelError(f"{manifest_path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{manifest_path} is not a {FORMAT} manifest (not a JSON object)")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{manifest_path} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{model_dir} holds graphs of format version {manifest.get('format_version')!r}; this "
                         f"version runs {FORMAT_VERSION}: re-export it from its checkpoint with `cuematte export`")
    try:
        return _describe(model_dir, manifest)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A field missing or of the wrong type: a hand-edited or damaged manifest, not a bug to trace.
        raise ModelError(f"{manifest_path} has a missing or malformed field ({type(exc).__name__}: {exc}); "
                         "re-export the model with `cuematte export`") from exc


def _describe(model_dir: Path, manifest: dict[str, Any]) -> ModelInfo:
    """The rest of :func:`read_model_info`: both graphs present and as recorded, the config read."""
    manifest_path = model_dir / "model.json"
    for role in ("flash", "frame"):
        name = manifest.get("graphs", {}).get(role)
        if not name or not (model_dir / name).is_file():
            raise ModelError(f"model folder {model_dir} is missing its {role} graph ({name or role + '.onnx'})")
        want = manifest.get("sha256", {}).get(name)
        if want is not None and sha256_of(model_dir / name) != want:
            raise ModelError(f"{model_dir / name} is not the graph model.json records (sha256 differs): a "
                             "corrupt copy, or a graph replaced without re-exporting")
    cfg = manifest["config"]
    removed = [k for k in REMOVED_SWITCHES if cfg.get(k)]
    if removed:
        raise ModelError(f"{model_dir} uses {removed_switches_message(removed)}")
    n, c = manifest["flash_features_shape"]
    try:
        spec = GraphSpec.from_dict(manifest["io"]) if "io" in manifest else GraphSpec.for_config(cfg, (n, c))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{manifest_path} has an unreadable graph contract (\"io\"): {exc}") from exc
    return ModelInfo(
        path=model_dir,
        name=str(manifest.get("name", cfg.get("name", "?"))),
        trained=bool(manifest.get("trained", False)),
        cmn_size=(int(cfg["cmn_size"][0]), int(cfg["cmn_size"][1])),
        person_mask=bool(cfg.get("person_mask", False)),
        flash_prior=bool(cfg.get("flash_prior", False)),
        align_flash=bool(cfg.get("align_flash", False)),
        guidance=bool(cfg.get("guidance", False)),
        guidance_bands=_pair(cfg.get("guidance_bands", GUIDANCE_BANDS)),
        guidance_confirm_bg=bool(cfg.get("guidance_confirm_bg", False)),
        guidance_fill_pockets=bool(cfg.get("guidance_fill_pockets", False)),
        flash_features_shape=(int(n), int(c)),
        spec=spec,
        manifest=manifest,
    )


BACKENDS = ("auto", "cpu", "cuda", "tensorrt")
PLANS_HOME = Path.home() / ".cache" / "cuematte" / "plans"


def default_plans_dir(model_name: str) -> Path:
    """Where ``cuematte build-engines`` puts a model's TensorRT plans unless told otherwise."""
    return PLANS_HOME / model_name


class FlashModel:
    """Both graphs of a model folder, loaded once per process on one backend:

    * ``cpu``: ONNX Runtime on the CPU (the embedded default);
    * ``cuda``: ONNX Runtime's CUDA execution provider (``pip install 'cuematte[gpu]'``);
    * ``tensorrt``: native TensorRT plans built by ``cuematte build-engines`` (``cuematte[tensorrt]``);
    * ``auto``: TensorRT if plans for this model, GPU and TensorRT exist, else CUDA if ONNX Runtime has it and
      finds a GPU, else CPU. :attr:`backend` and :attr:`backend_reason` say what was chosen and why.

    ONNX Runtime sessions are shared by every matting session (their ``run`` is thread-safe); TensorRT gives
    each matting session its own execution context and stream (:meth:`session_graphs`).
    """

    def __init__(self, model: str | Path | None = None, *, backend: str = "cpu", threads: int | None = None,
                 plans: Path | None = None) -> None:
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.info = read_model_info(resolve_model_dir(model))
        if not self.info.trained:
            warnings.warn(
                f"model {self.info.path} is untrained (exported from random weights): its mattes are "
                f"meaningless; {HOW_TO_GET_A_MODEL}",
                UntrainedModelWarning,
                stacklevel=2,
            )
        self.plans_dir = plans or default_plans_dir(self.info.name)
        self._plans: Any = None
        self.max_side: int | None = None  # the longest frame side the backend takes (TensorRT's profile)
        self.backend, self.backend_reason = self._open(backend, threads)
        log.info("model %s on %s: %s", self.info.name, self.backend, self.backend_reason)
        self._check_contract()

    def _open(self, backend: str, threads: int | None) -> tuple[str, str]:
        if backend in ("tensorrt", "auto"):
            try:
                return "tensorrt", self._open_tensorrt()
            except BackendError as exc:
                if backend == "tensorrt":
                    raise
                skipped = f"no TensorRT ({exc})"
        else:
            skipped = "asked for"
        if backend in ("cuda", "auto"):
            try:
                self._open_ort(["cuda"], threads)
                return "cuda", f"ONNX Runtime CUDA; {skipped}" if backend == "auto" else "ONNX Runtime CUDA"
            except BackendError as exc:
                if backend == "cuda":
                    raise
                skipped += f"; no ONNX Runtime CUDA ({exc})"
        self._open_ort(["cpu"], threads)
        return "cpu", f"ONNX Runtime CPU; {skipped}" if backend == "auto" else "ONNX Runtime CPU"

    def _open_tensorrt(self) -> str:
        from cuematte.engine.backends.tensorrt import TrtPlans

        self._plans = TrtPlans(self.plans_dir, dict(self.info.manifest.get("sha256", {})))
        self.max_side = int(max(self._plans.manifest.profile["max"]))
        self.flash, self.frame = self.session_graphs()
        manifest = self._plans.manifest
        return f"TensorRT {manifest.tensorrt} plans in {self.plans_dir} ({manifest.precision}, {manifest.gpu})"

    def _open_ort(self, names: list[str], threads: int | None) -> None:
        graphs = self.info.manifest["graphs"]
        resolved = resolve_providers(names)
        if "cuda" in names:
            preload_cuda_libraries()
        try:
            self.flash = OrtGraph(self.info.path / graphs["flash"], providers=resolved, threads=threads)
            self.frame = OrtGraph(self.info.path / graphs["frame"], providers=resolved, threads=threads)
        except Exception as exc:  # onnxruntime raises its own exception types for broken files
            raise ModelError(f"cannot load the graphs of {self.info.path}: {exc}") from exc
        wanted = resolved[0]
        if wanted not in self.frame.session.get_providers():  # e.g. onnxruntime-gpu on a machine without a GPU
            raise BackendError(f"ONNX Runtime could not start {wanted} here (no usable GPU?)")

    def session_graphs(self) -> tuple[Graph, Graph]:
        """(flash, frame) graphs for one matting session: the shared ONNX Runtime sessions, or a new TensorRT
        execution context and stream per graph."""
        if self._plans is not None:
            return self._plans.graph("flash"), self._plans.graph("frame")
        return self.flash, self.frame

    def _check_contract(self) -> None:
        """The loaded graphs take and give what model.json's contract says (names; fixed dims too on ONNX
        Runtime, which reports them)."""
        spec = self.info.spec
        for role, graph, ins, outs in (("flash", self.flash, spec.flash_inputs, spec.flash_outputs),
                                       ("frame", self.frame, spec.frame_inputs, spec.frame_outputs)):
            for kind, want, names, metas in (("inputs", ins, graph.input_names, "get_inputs"),
                                             ("outputs", outs, graph.output_names, "get_outputs")):
                if set(names) != {t.name for t in want}:
                    raise ModelError(f"{role} graph {kind} {names} do not match model.json "
                                     f"({[t.name for t in want]})")
                session = getattr(graph, "session", None)
                if session is not None:
                    got = {m.name: tuple(m.shape) for m in getattr(session, metas)()}
                    why = GraphSpec.mismatch(role, want, [t.name for t in want], [got[t.name] for t in want])
                    if why:
                        raise ModelError(f"{self.info.path}: {why}")

    @property
    def cached_names(self) -> tuple[str, ...]:
        """What the flash graph outputs and the session caches for the per-frame graph."""
        return self.info.spec.cached
