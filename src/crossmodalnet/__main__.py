"""Command-line interface: ``crossmodalnet demo`` (more subcommands build on the same parser)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("crossmodalnet")


def _demo(args: argparse.Namespace) -> int:
    """Train on generated time-resolved CITE-seq, predict the test cells and write results."""
    import numpy as np
    import pandas as pd
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein, regression_metrics
    from crossmodalnet.model import CrossmodalNet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = args.seed
    mdata = cmn.datasets.synthetic_cite(
        n_obs=args.n_obs, n_genes=args.n_genes, n_proteins=args.n_proteins, n_time_points=3, rng=args.seed
    )
    logger.info(
        "data: synthetic_cite %d cells × %d genes × %d proteins, 3 time points", *mdata["rna"].shape, args.n_proteins
    )
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=args.n_latent)
    model.train(max_epochs=args.max_epochs, accelerator="cpu", enable_progress_bar=not args.quiet)
    pred = model.predict_protein()
    test = model.test_indices
    true = np.asarray(mdata["prot"].X)
    metrics = regression_metrics(pred.to_numpy()[test], true[test])
    per_protein = pd.DataFrame(
        {"pearson": pearson_per_protein(pred.to_numpy()[test], true[test])}, index=pred.columns
    ).rename_axis("protein")
    pred.to_csv(out / "predicted_proteins.csv")
    per_protein.to_csv(out / "per_protein_pearson_test.csv")
    summary = pd.DataFrame([{**metrics, "n_test_cells": len(test), "epochs": len(model.history["loss_train"])}])
    summary.to_csv(out / "metrics.csv", index=False)
    model.save(out / "model", overwrite=True)
    per_cell = float(np.nanmean(pearson_per_cell(pred.to_numpy()[test], true[test])))
    print(
        f"test cells: {len(test)}  per-protein Pearson {metrics['pearson_protein']:.3f}  "
        f"per-cell Pearson {per_cell:.3f}  MSE {metrics['mse']:.4f}\nwrote {out}/"
    )
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark harness (`crossmodalnet.benchmark.run_benchmark`) and write its tables to --out."""
    import os

    # set before torch/LightGBM load OpenMP: idle threads sleep instead of spinning (steadier timings)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from crossmodalnet.benchmark import run_benchmark

    results = run_benchmark(
        data=args.data,
        sizes=args.sizes,
        methods=args.methods,
        settings=args.settings,
        out=args.out,
        quick=args.quick,
        speed=args.speed,
        speed_sizes=args.speed_sizes,
        max_epochs=args.max_epochs,
        seed=args.seed,
        threads=args.threads,
        shared_dir=args.shared_dir,
        speed_timeout=args.speed_timeout,
    )
    n_failed = int(results["status"].str.startswith(("failed", "timeout")).sum())
    print(f"{len(results)} result rows ({n_failed} failed or timed out); wrote {args.out}/results.md")
    return 0


def _add_benchmark_parser(sub) -> None:
    bench = sub.add_parser(
        "benchmark",
        help="compare CrossmodalNet with baselines (Ridge, LightGBM, MLPs, totalVI, ...); write tables to --out",
    )
    bench.add_argument("--data", default="synthetic", help="comma-separated: synthetic, bmmc, pbmc")
    bench.add_argument(
        "--sizes", default=None, help="synthetic sizes: quick, D1, D2, D3 (default D1; quick with --quick)"
    )
    bench.add_argument("--methods", default=None, help="comma-separated method keys (default: all)")
    bench.add_argument("--settings", default=None, help="in_distribution, heldout_time (default: both)")
    bench.add_argument("--out", default="results", help="output folder (created)")
    bench.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (a few minutes at most)")
    bench.add_argument("--speed", action="store_true", help="time each method in its own process (Table S2 style)")
    bench.add_argument("--speed-sizes", default=None, help="synthetic sizes for --speed (default: --sizes)")
    bench.add_argument("--speed-timeout", type=float, default=1800.0, help="seconds before an isolated run is stopped")
    bench.add_argument("--max-epochs", type=int, default=500)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--threads", type=int, default=2, help="torch, BLAS and LightGBM threads")
    bench.add_argument(
        "--shared-dir", default=None, help="folder with data/ (default $CMN_SHARED_DIR or <repo>/../shared)"
    )
    bench.set_defaults(func=_benchmark)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (imports nothing heavy, so ``--help`` is fast)."""
    parser = argparse.ArgumentParser(prog="crossmodalnet", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train and predict on the default data set, write results to --out")
    demo.add_argument("--out", default="crossmodalnet_demo", help="output folder (created)")
    demo.add_argument("--n-obs", type=int, default=2000)
    demo.add_argument("--n-genes", type=int, default=2000)
    demo.add_argument("--n-proteins", type=int, default=50)
    demo.add_argument("--n-latent", type=int, default=512)
    demo.add_argument("--max-epochs", type=int, default=500)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    _add_benchmark_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
