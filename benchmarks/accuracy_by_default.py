"""Accuracy of the default model against the paper preset and the baselines, over several seeds.

Runs ``crossmodalnet benchmark`` (:func:`crossmodalnet.benchmark.run_benchmark`) once per data group
and seed (the seed sets data generation, the split and every model), then writes ``summary.md``:
one table per data set and setting with the mean over seeds and every seed's value of test
per-protein Pearson, per-cell Pearson, MSE and fit time. This is the command behind the tables
of ``docs/benchmarks.md``::

    python benchmarks/accuracy_by_default.py --out results/accuracy --seeds 0,1,2 --threads 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from crossmodalnet.benchmark import run_benchmark

GROUPS = {"real": ["bmmc", "pbmc", "dyngen"], "synthetic": ["synthetic"], "programs": ["programs"]}
METHODS = "crossmodalnet_paper,crossmodalnet,ridge,lightgbm,mlp_mse"
_TITLES = {"in_distribution": "in-distribution", "heldout_time": "held-out middle time point"}


def summarise(frames: list[pd.DataFrame]) -> str:
    """Markdown tables: per data set and setting, methods × (mean over seeds, then each seed)."""
    df = pd.concat(frames, ignore_index=True)
    df = df[df["status"] == "ok"]
    lines = []
    for (dataset, setting), sub in df.groupby(["dataset", "setting"], sort=False):
        seeds = sorted(sub["seed"].unique())
        lines += [f"### {dataset} — {_TITLES.get(setting, setting)}", ""]
        header = [
            "method",
            "per-protein r (mean of seeds)",
            *[f"seed {s}" for s in seeds],
            "per-cell r",
            "MSE",
            "fit (s)",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, m in sub.groupby("method", sort=False):
            by_seed = m.set_index("seed")
            name = "**CrossmodalNet (default)**" if method == "CrossmodalNet" else method
            row = [name, f"{m['pearson_protein'].mean():.3f}"]
            row += [f"{by_seed.loc[s, 'pearson_protein']:.3f}" if s in by_seed.index else "" for s in seeds]
            row += [f"{m['pearson_cell'].mean():.3f}", f"{m['mse'].mean():.3f}", f"{m['fit_seconds'].mean():.1f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run every group and seed, write ``summary.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/accuracy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--sizes", default="D1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding the real data sets")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument(
        "--include", default="", help="comma-separated output folders of other runs to add to the summary"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    frames = []
    for group in args.groups.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            folder = out / f"{group}_seed{seed}"
            if not args.summarise_only:
                run_benchmark(
                    data=GROUPS[group],
                    sizes=args.sizes,
                    methods=args.methods,
                    out=folder,
                    seed=seed,
                    threads=args.threads,
                    data_dir=args.data_dir,
                )
            if (folder / "results.csv").is_file():
                frames.append(pd.read_csv(folder / "results.csv").assign(seed=seed))
            (out / "summary.md").write_text(summarise(frames))
    for other in filter(None, args.include.split(",")):
        for csv in sorted(Path(other).glob("*_seed*/results.csv")):
            frames.append(pd.read_csv(csv).assign(seed=int(csv.parent.name.rsplit("_seed", 1)[1])))
    if frames:
        df = pd.concat(frames, ignore_index=True)
        df["order"] = df["method"].map({m: i for i, m in enumerate(dict.fromkeys(df["method"]))})
        df = df.sort_values(["order"], kind="stable").drop(columns="order")
        (out / "summary.md").write_text(summarise([df]))


if __name__ == "__main__":
    main()
