"""Write a fixed evaluation split as files for the evaluation CLI (layout in ``cuematte.training.data.io``).

    python -m cuematte.training.data.make_eval --out DIR --n N --split static|dynamic|video|parallax [--length 30]
        [--workers 2] [--hold-still]

``parallax``: two-view pairs (``render_parallax_pair``, depth-driven motion) written as
``cuematte.training.data.parallax.write_parallax_sample`` lays them out; ``--n`` defaults to 48 for it.

Seeds come from the evaluation namespace (``eval_seed(i, split)``), never used for training, so the same
command always writes the same data. ``DIR/index.json`` lists every sample with its seed and how it was made.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cuematte.training.data.config import DEFAULT_CONFIG, DEFAULT_PARALLAX, ParallaxConfig, SynthConfig
from cuematte.training.data.io import write_sample, write_sequence
from cuematte.training.data.parallax import write_parallax_sample
from cuematte.training.data.render import render_parallax_pair, render_sample, render_sequence
from cuematte.training.data.seeds import EvalSplit, eval_seed
from cuematte.training.pools import POOL_START

SPLITS = ("static", "dynamic", "video", "parallax")
PARALLAX_EVAL_N = 48  # the parallax split's default size (at SynthConfig's default 288x512)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    return x


def _write_one(job: tuple[Path, str, int, int, SynthConfig, int, ParallaxConfig]) -> dict[str, Any]:
    out, split, i, seed, cfg, length, par = job
    sid = f"{split}_{i:05d}"
    if split == "parallax":
        pair = render_parallax_pair(seed, cfg, par)
        write_parallax_sample(out, sid, pair)
        meta = pair.meta
    elif split == "video":
        seq = render_sequence(seed, length, cfg)
        write_sequence(out / sid, seq)
        meta = seq.meta
    else:
        s = render_sample(seed, cfg, dynamic=split == "dynamic")
        write_sample(out, sid, s)
        meta = s.meta
    return {"id": sid, "seed": seed, "meta": _jsonable(meta)}


def make_eval(
    out: Path,
    n: int,
    split: str,
    cfg: SynthConfig = DEFAULT_CONFIG,
    length: int = 30,
    workers: int = 1,
    start: int = 0,
    par: ParallaxConfig = DEFAULT_PARALLAX,
) -> list[dict[str, Any]]:
    """Render and write ``n`` samples (or clips, or view pairs) of ``split``; returns the index entries."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    out.mkdir(parents=True, exist_ok=True)
    key: EvalSplit = (
        "video" if split == "video" else "parallax" if split == "parallax" else
        "dynamic" if split == "dynamic" else "static"
    )
    jobs = [(out, split, i, eval_seed(i, key), cfg, length, par) for i in range(start, start + n)]
    if workers > 1:
        with mp.get_context(POOL_START).Pool(workers) as pool:
            entries = list(tqdm(pool.imap(_write_one, jobs), total=n, desc=f"eval {split}"))
    else:
        entries = [_write_one(j) for j in tqdm(jobs, desc=f"eval {split}")]
    index = {
        "split": split,
        "n": n,
        "start": start,
        "size": list(cfg.size),
        "length": length if split == "video" else None,
        "config": _jsonable(asdict(cfg)),
        "samples": entries,
    }
    if split == "parallax":  # only here, so the other splits' index files stay as they were
        index["parallax"] = _jsonable(asdict(par))
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return entries


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=None, help=f"samples (required; parallax: {PARALLAX_EVAL_N})")
    ap.add_argument("--split", choices=SPLITS, required=True)
    ap.add_argument("--length", type=int, default=30, help="frames per clip (video split)")
    ap.add_argument("--size", type=str, default=None, help="HxW (default 288x512)")
    ap.add_argument("--start", type=int, default=0, help="first evaluation index (to extend a split)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--hold-still", action="store_true",
                    help="no subject motion between flash and frame (camera shake stays): the same frames to "
                         "matte as the plain split, with the flash lined up, to see what a model makes of an "
                         "aligned flash")
    args = ap.parse_args(argv)
    if args.n is None:
        if args.split != "parallax":
            ap.error("the following arguments are required: --n")
        args.n = PARALLAX_EVAL_N
    cfg = SynthConfig()
    if args.size:
        h, w = (int(v) for v in args.size.lower().split("x"))
        cfg = replace(cfg, size=(h, w))
    if args.hold_still:
        cfg = replace(cfg, person_shift=0.0, person_rot_deg=0.0, person_scale=0.0)
    make_eval(args.out, args.n, args.split, cfg, args.length, args.workers, args.start)
    print(f"wrote {args.n} {args.split} samples to {args.out}")


if __name__ == "__main__":
    main()
