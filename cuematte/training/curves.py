"""Training curve PNG from a run's log.jsonl: ``python -m cuematte.training.curves RUN_DIR [--out curve.png]``; with
several run folders, their eval curves in one plot (equal-budget comparisons)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot_curve(log_path: Path, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])
    total = np.array([r["total"] for r in rows])
    k = max(1, len(total) // 100)
    smooth = np.convolve(total, np.ones(k) / k, mode="valid")
    ev = [(r["step"], r["eval_mse"] * 1e3) for r in rows if "eval_mse" in r]
    fig, ax1 = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax1.plot(steps, total, color="#bbb", lw=0.6, label="training loss (per step)")
    ax1.plot(steps[k - 1 :], smooth, color="#1f77b4", lw=1.6, label=f"training loss ({k}-step mean)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("total loss (eq. 12 / eq. 13)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    lines = ax1.get_legend_handles_labels()
    if ev:
        ax2 = ax1.twinx()
        ax2.plot([e[0] for e in ev], [e[1] for e in ev], "o-", color="#d62728", label="eval alpha MSE x1e3")
        ax2.set_ylabel("eval alpha MSE x1e3 (fixed-seed split)")
        ax2.set_yscale("log")
        lines = (lines[0] + ax2.get_legend_handles_labels()[0], lines[1] + ax2.get_legend_handles_labels()[1])
    ax1.legend(*lines, loc="upper right", fontsize=8)
    ax1.set_title(title or f"training curve: {log_path.parent.name}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_eval_comparison(runs: list[Path], out: Path, title: str = "") -> Path:
    """Eval alpha MSE against step for several runs (equal-budget ablations) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for run in runs:
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        ev = [(r["step"], r["eval_mse"] * 1e3) for r in rows if "eval_mse" in r]
        ax.plot([e[0] for e in ev], [e[1] for e in ev], "o-", label=run.name)
    ax.set_xlabel("step")
    ax.set_ylabel("eval alpha MSE x1e3 (fixed-seed split)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "equal-budget runs")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run", type=Path, nargs="+", help="run folder(s); several: compare their eval curves")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if len(args.run) > 1:
        print(plot_eval_comparison(args.run, args.out or Path("runs.png")))
    else:
        print(plot_curve(args.run[0] / "log.jsonl", args.out or args.run[0] / "curve.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
