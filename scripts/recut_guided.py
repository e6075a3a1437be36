"""Re-cut an exported guided-refinement model's frame graph at the guided filter's coefficients.

Model folders exported before the engine applied the guided filter itself (``cuematte.engine.refine``) end their
frame graph in full-resolution ``alpha`` / ``foreground``. This keeps the same nodes and weights up to the two
coefficient tensors, names them ``coef_a`` / ``coef_b``, drops the full-resolution ``frame`` input, and checks
the result end to end against the original graph (same inputs, the engine's refinement after the new one) on a
real photograph at three sizes. A new export of the same checkpoint gives this form directly (the shipped model
was re-exported so, with results identical to its re-cut); this is for model folders whose checkpoint is gone.

    python scripts/recut_guided.py MODEL_DIR --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from cuematte.engine.cues.guidance import build_guidance, guidance_input
from cuematte.engine.frames import resize
from cuematte.engine.graphspec import GraphSpec
from cuematte.engine.model import read_model_info, sha256_of
from cuematte.engine.refine import guided_float

COEF_WEIGHT = "net.guided.coef.6.weight"  # the guided filter's last 1x1 conv: its output is a


def coefficient_tensors(graph: onnx.GraphProto) -> tuple[str, str]:
    """Names of a (the coefficient conv's output) and b = mean_y - a * mean_x in the exported graph."""
    conv = [n for n in graph.node if n.op_type == "Conv" and COEF_WEIGHT in n.input]
    if len(conv) != 1:
        raise SystemExit(f"no single Conv reads {COEF_WEIGHT}: not a guided-refinement frame graph")
    a = conv[0].output[0]
    muls = {n.output[0] for n in graph.node if n.op_type == "Mul" and a in n.input}
    subs = [n for n in graph.node if n.op_type == "Sub" and n.input[1] in muls]
    if len(subs) != 1:
        raise SystemExit("cannot find b = mean_y - a * mean_x after the coefficient conv")
    return a, subs[0].output[0]


def recut(src: Path, dst: Path) -> onnx.ModelProto:
    model = onnx.load(str(src))
    a, b = coefficient_tensors(model.graph)
    inputs = [i.name for i in model.graph.input if i.name != "frame"]
    onnx.utils.extract_model(str(src), str(dst), inputs, [a, b])
    cut = onnx.load(str(dst))
    rename = {a: "coef_a", b: "coef_b"}
    for node in cut.graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        node.output[:] = [rename.get(x, x) for x in node.output]
    for out in cut.graph.output:
        out.name = rename.get(out.name, out.name)
    del cut.metadata_props[:]
    cut.metadata_props.extend(model.metadata_props)
    cut = onnx.shape_inference.infer_shapes(cut)
    onnx.checker.check_model(cut, full_check=True)
    onnx.save(cut, str(dst))
    return cut


def compare(old: Path, new: Path, feeds: dict[str, np.ndarray], frame: np.ndarray,
            guidance: np.ndarray | None) -> tuple[float, float]:
    """Max abs difference of alpha and foreground (in [0, 1]): old graph vs new graph + the engine's refinement."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    old_s = ort.InferenceSession(str(old), opts, providers=["CPUExecutionProvider"])
    new_s = ort.InferenceSession(str(new), opts, providers=["CPUExecutionProvider"])
    alpha0, fg0 = old_s.run(["alpha", "foreground"], feeds)
    a, b = new_s.run(["coef_a", "coef_b"], {k: v for k, v in feeds.items() if k != "frame"})
    alpha1, fg1 = guided_float(frame, a[0], b[0], guidance)
    return (float(np.abs(alpha1 - alpha0[0, 0]).max()),
            float(np.abs(fg1 / 255.0 - fg0[0].transpose(1, 2, 0)).max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    info = read_model_info(args.model_dir)
    if info.spec.frame_outputs[0].name != "alpha" or info.manifest["config"].get("refine") != "guided":
        raise SystemExit(f"{args.model_dir} is not a guided model with a full-resolution frame graph")
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.model_dir.iterdir():
        if f.name not in ("frame.onnx", "model.json"):
            shutil.copy2(f, args.out / f.name)
    old, new = args.model_dir / "frame.onnx", args.out / "frame.onnx"
    recut(old, new)

    # Inputs: the shipped engine's own on a real photograph (astronaut, MediaPipe's mask and guidance), and
    # random cached tensors with an all-unknown guidance at two frame sizes.
    from skimage import data

    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.session import to_nchw

    rng = np.random.default_rng(0)
    h, w = info.cmn_size
    n, c = info.flash_features_shape
    checks: dict[str, dict[str, float]] = {}
    seg = MediaPipeSegmenter()
    for name, (fh, fw) in (("astronaut 512x512", (512, 512)), ("astronaut 1280x720", (720, 1280)),
                           ("astronaut 640x360", (360, 640))):
        frame = resize(data.astronaut(), (fh, fw))
        small_c = resize(frame, (h, w))
        person = seg.segment(frame, size=(h, w))
        guidance = build_guidance(person)
        feeds = {"frame": to_nchw(frame), "frame_cmn": to_nchw(small_c),
                 "flash_features": rng.standard_normal((1, n, c)).astype(np.float32),
                 "person_mask": person[None, None].astype(np.float32),
                 "flash_prior": np.concatenate([rng.standard_normal((1, 3, h, w)), guidance_input(guidance)],
                                               axis=1).astype(np.float32),
                 "guidance": guidance_input(guidance)}
        feeds = {k: v for k, v in feeds.items() if k in {t.name for t in info.spec.frame_inputs}}
        alpha_err, fg_err = compare(old, new, feeds, frame, guidance)
        checks[name] = {"alpha_max_abs": alpha_err, "foreground_max_abs": fg_err}
        print(f"{name}: alpha {alpha_err:.2e}, foreground {fg_err:.2e}")
    worst = max(v for d in checks.values() for v in d.values())
    if worst > 1e-3:
        raise SystemExit(f"re-cut graph differs from the original by {worst:.2e} (> 1e-3)")

    manifest = json.loads((args.model_dir / "model.json").read_text())
    cfg = manifest["config"]
    manifest["io"] = GraphSpec.for_config(cfg, (n, c)).to_dict()
    manifest["sha256"]["frame.onnx"] = sha256_of(new)
    manifest["recut"] = {"from_frame_sha256": sha256_of(old), "script": "scripts/recut_guided.py",
                         "why": "the engine applies the guided filter (cuematte.engine.refine)",
                         "max_abs_vs_original": checks}
    (args.out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out}: frame.onnx {new.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
