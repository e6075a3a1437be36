"""A parallax model folder: ``model.json`` + ``parallax.onnx`` (written by the export through
:func:`write_parallax_manifest`), and the graph opened on ONNX Runtime's CPU provider.

The graph (:mod:`cuematte.export.parallax_onnx`) takes ``view, view_bg, view_fg, view_fg_pair`` (1, 3, H, W)
float32 RGB in [0, 1] and ``trimap, trimap_fg`` (1, 3, H, W) one-hot [background, unknown, foreground], H and W
multiples of 32, and returns ``alpha`` (1, 1, H, W) and the premultiplied foreground ``fg`` (1, 3, H, W), exactly
the trimap's verdict wherever it is certain. ``model.json`` says how the engine feeds it: the patch and overlap
(paper Sec. 4.5), the long side the views are matted at, and the guidance trimap's parameters.

No torch here: json, numpy and ONNX Runtime only.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.engine.backends.onnxruntime import OrtGraph
from cuematte.engine.cues.guidance import GuidanceParams
from cuematte.engine.errors import ModelError, ModelNotFoundError
from cuematte.engine.model import MODELS_DIR, UntrainedModelWarning, sha256_of
from cuematte.engine.parallax.patches import OVERLAP, PATCH

KIND = "parallax"
FORMAT = 1
GRAPH_FILE = "parallax.onnx"
DEFAULT_MODEL = MODELS_DIR / "parallax-lite"
SIZE_MULTIPLE = 32  # the graph's height and width rule
WORK_SIDE = 1024  # views are matted at most this long on their long side
# The segmenter's mask comes from a 256-px input: its edge is coarse at the work size, so the band the network
# decides in is wider than the flash models' (GUIDANCE_BANDS), on both sides.
DEFAULT_GUIDANCE = GuidanceParams(sure=0.9, unsure=0.1, inner=0.02, outer=0.05)
INPUTS = ("view", "view_bg", "view_fg", "view_fg_pair", "trimap", "trimap_fg")
OUTPUTS = ("alpha", "fg")
# Written by write_parallax_manifest itself; meta may not override them.
RESERVED = ("kind", "format", "graph", "sha256", "patch", "overlap", "work_side", "guidance")

HOW_TO_GET_A_PARALLAX_MODEL = (
    "train and export one: `cuematte train --recipe parallax-ratio --out runs/parallax-ratio` then "
    "`cuematte export --checkpoint runs/parallax-ratio/last.safetensors --out-dir MODEL_DIR`; "
    "then pass --model MODEL_DIR"
)


@dataclass(frozen=True)
class ParallaxInfo:
    """What ``model.json`` says about a parallax model folder."""

    path: Path
    name: str
    trained: bool
    graph: Path  # the ONNX file, inside ``path``
    patch: int  # the side of the square patches the graph runs on (multiple of 32)
    overlap: int  # between neighbouring patches
    work_side: int  # the long side the views are shrunk to (never enlarged)
    guidance: GuidanceParams  # the segmenter -> trimap rule the model was trained for
    manifest: dict[str, Any]


def resolve_parallax_dir(model: str | Path | None) -> Path:
    """The folder to load: the one given, else the shipped default; :class:`ModelNotFoundError` if the default
    is not installed."""
    if model is not None:
        return Path(model)
    if not (DEFAULT_MODEL / "model.json").is_file():
        raise ModelNotFoundError(f"no parallax model given and the default {DEFAULT_MODEL} is not installed; "
                                 f"{HOW_TO_GET_A_PARALLAX_MODEL}")
    return DEFAULT_MODEL


def read_parallax_info(model_dir: Path) -> ParallaxInfo:
    """Validate a parallax model folder (manifest readable and of this kind and format, the graph present and the
    one recorded) and describe it. Every problem is a :class:`ModelError` naming the folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"parallax model folder not found: {model_dir}")
    manifest_path = model_dir / "model.json"
    if not manifest_path.is_file():
        raise ModelError(f"{model_dir} has no model.json; it is not a cuematte model folder "
                         f"({HOW_TO_GET_A_PARALLAX_MODEL})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ModelError(f"{manifest_path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{manifest_path} is not a model manifest (not a JSON object)")
    kind = manifest.get("kind")
    if kind != KIND:
        # Flash folders predate "kind": their manifest says format "cuematte-flash-model".
        what = "a flash model (flash.onnx + frame.onnx)" if kind is None and "graphs" in manifest else f"kind {kind!r}"
        raise ModelError(f"{model_dir} holds {what}, not a parallax model; {HOW_TO_GET_A_PARALLAX_MODEL}")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{model_dir} is a parallax model of format {manifest.get('format')!r}; this version reads "
                         f"format {FORMAT}: re-export it with `cuematte export`")
    try:
        return _describe(model_dir, manifest)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A field missing or of the wrong type: a hand-edited or damaged manifest, not a bug to trace.
        raise ModelError(f"{manifest_path} has a missing or malformed field ({type(exc).__name__}: {exc}); "
                         "re-export the model with `cuematte export`") from exc


def _describe(model_dir: Path, manifest: dict[str, Any]) -> ParallaxInfo:
    name = str(manifest["graph"])
    graph = model_dir / name
    if Path(name).name != name or not graph.is_file():  # a bare file name inside the folder, nothing else
        raise ModelError(f"parallax model folder {model_dir} is missing its graph ({name})")
    want = manifest.get("sha256")
    if want is not None and sha256_of(graph) != want:
        raise ModelError(f"{graph} is not the graph model.json records (sha256 differs): a corrupt copy, or a graph "
                         "replaced without re-exporting")
    patch, overlap, work_side = int(manifest["patch"]), int(manifest["overlap"]), int(manifest["work_side"])
    if patch < SIZE_MULTIPLE or patch % SIZE_MULTIPLE or not 0 <= overlap < patch or work_side < 64:
        raise ValueError(f"patch {patch} (a multiple of {SIZE_MULTIPLE}), overlap {overlap} (0 <= overlap < patch) "
                         f"or work_side {work_side} (>= 64) out of range")
    g = manifest["guidance"]
    guidance = GuidanceParams(sure=float(g["sure"]), unsure=float(g["unsure"]), inner=float(g["inner"]),
                              outer=float(g["outer"]))
    if not (0.0 <= guidance.unsure < guidance.sure <= 1.0 and guidance.inner >= 0 and guidance.outer >= 0):
        raise ValueError(f"guidance {g} out of range (0 <= unsure < sure <= 1, bands >= 0)")
    return ParallaxInfo(path=model_dir, name=str(manifest.get("name", model_dir.name)),
                        trained=bool(manifest.get("trained", False)), graph=graph, patch=patch, overlap=overlap,
                        work_side=work_side, guidance=guidance, manifest=manifest)


def write_parallax_manifest(out_dir: Path, graph_path: Path, meta: Mapping[str, Any] | None = None, *,
                            patch: int = PATCH, overlap: int = OVERLAP, work_side: int = WORK_SIDE,
                            guidance: GuidanceParams = DEFAULT_GUIDANCE) -> dict[str, Any]:
    """Write ``out_dir/model.json`` for the graph at ``graph_path`` (copied into ``out_dir`` if it lies elsewhere)
    and return it: kind, format, the graph's file name and sha256, the patch, overlap, work side and guidance
    parameters, plus ``meta`` (name, trained, source, recipe, commit, training figures: anything JSON)."""
    out_dir, graph_path = Path(out_dir), Path(graph_path)
    meta = dict(meta or {})
    clash = sorted(set(meta) & set(RESERVED))
    if clash:
        raise ValueError(f"meta may not set {clash}: write_parallax_manifest writes them (pass them as arguments)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / graph_path.name
    if graph_path.resolve() != target.resolve():
        shutil.copyfile(graph_path, target)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT,
        "name": meta.pop("name", out_dir.name),
        "trained": bool(meta.pop("trained", False)),
        "graph": target.name,
        "sha256": sha256_of(target),
        "patch": int(patch),
        "overlap": int(overlap),
        "work_side": int(work_side),
        "guidance": {"sure": guidance.sure, "unsure": guidance.unsure, "inner": guidance.inner,
                     "outer": guidance.outer},
        **meta,
    }
    (out_dir / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class ParallaxModel:
    """A parallax model folder's graph in one ONNX Runtime CPU session, loaded once and shared: ``run`` is safe
    to call from several threads at once (ONNX Runtime sessions are). ``threads``: intra-op threads (None: up
    to 4)."""

    def __init__(self, model: str | Path | None = None, threads: int | None = None) -> None:
        self.info = read_parallax_info(resolve_parallax_dir(model))
        if not self.info.trained:
            warnings.warn(f"parallax model {self.info.path} is untrained (exported from random weights): its mattes "
                          f"are meaningless; {HOW_TO_GET_A_PARALLAX_MODEL}", UntrainedModelWarning, stacklevel=2)
        try:
            self.graph = OrtGraph(self.info.graph, providers=["CPUExecutionProvider"], threads=threads)
        except Exception as exc:  # onnxruntime raises its own exception types for broken files
            raise ModelError(f"cannot load the graph of {self.info.path}: {exc}") from exc
        self._check_contract()

    def _check_contract(self) -> None:
        """The graph takes the six inputs and gives the two outputs by name, each input (1, 3, H, W); a graph of
        fixed size must be of the manifest's patch size."""
        session = self.graph.session
        if set(self.graph.input_names) != set(INPUTS) or not set(OUTPUTS) <= set(self.graph.output_names):
            raise ModelError(f"{self.info.graph} takes {self.graph.input_names} and gives {self.graph.output_names}; "
                             f"a parallax graph takes {list(INPUTS)} and gives {list(OUTPUTS)}")
        for meta in session.get_inputs():
            shape = list(meta.shape)
            fixed = [d for d in shape[2:] if isinstance(d, int)]
            if len(shape) != 4 or shape[1] != 3 or any(d != self.info.patch for d in fixed):
                raise ModelError(f"{self.info.graph} input {meta.name} is {shape}; expected (1, 3, H, W) with H and W "
                                 f"{self.info.patch} or dynamic")

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The six (1, 3, P, P) float32 inputs -> (alpha (1, 1, P, P), premultiplied fg (1, 3, P, P))."""
        out = self.graph.run(feeds)
        return out["alpha"], out["fg"]


__all__ = [
    "DEFAULT_GUIDANCE",
    "DEFAULT_MODEL",
    "FORMAT",
    "KIND",
    "WORK_SIDE",
    "ParallaxInfo",
    "ParallaxModel",
    "read_parallax_info",
    "resolve_parallax_dir",
    "write_parallax_manifest",
]
