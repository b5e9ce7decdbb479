"""Command-line interface: ``crossmodalnet demo | train | predict | benchmark``."""

from __future__ import annotations

import argparse
import logging
import sys

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY

logger = logging.getLogger("crossmodalnet")


def _lazy(name: str):
    """Defer importing the command implementations (and scvi/torch) until a command runs."""

    def run(args: argparse.Namespace) -> int:
        from crossmodalnet import _cli

        try:
            return getattr(_cli, name)(args)
        except _cli.CLIError as err:
            print(f"crossmodalnet {name}: error: {err}", file=sys.stderr)
            return 2

    return run


def _add_benchmark_parser(sub) -> None:
    bench = sub.add_parser(
        "benchmark",
        help="compare CrossmodalNet with baselines (Ridge, LightGBM, MLPs, totalVI, ...); write tables to --out",
    )
    bench.add_argument(
        "--data",
        default="synthetic",
        help="comma-separated: synthetic, programs (synthetic_cite structure=programs at --sizes), bmmc, pbmc, dyngen",
    )
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
        "--data-dir",
        default=None,
        help="folder holding the real data sets (bmmc_cite_600/, pbmc1k_protein_v3/, dyngen_bifurcating_200/), "
        "e.g. ../shared/data; needed for bmmc, pbmc and dyngen",
    )
    bench.set_defaults(func=_lazy("benchmark"))


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (imports nothing heavy, so ``--help`` is fast)."""
    parser = argparse.ArgumentParser(prog="crossmodalnet", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, predict, evaluate and plot on the embedded data set; write to --out")
    demo.add_argument("--out", default="crossmodalnet_demo", help="output folder (created)")
    demo.add_argument(
        "--data",
        choices=("bmmc", "synthetic"),
        default="bmmc",
        help="bmmc: embedded 600-cell BMMC CITE-seq (donor as covariate); synthetic: generated time course",
    )
    demo.add_argument("--n-latent", type=int, default=512)
    demo.add_argument("--max-epochs", type=int, default=500)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_lazy("demo"))

    train = sub.add_parser("train", help="train a model on a CITE-seq .h5mu and save it to --out")
    train.add_argument("input", help="CITE-seq MuData (.h5mu) with RNA and protein modalities")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--rna-key", default=DEFAULT_RNA_KEY)
    train.add_argument("--protein-key", default=DEFAULT_PROTEIN_KEY)
    train.add_argument("--rna-layer", default=None, help="RNA layer (default .X; log-normalised expected)")
    train.add_argument("--protein-layer", default=None, help="protein layer (default .X; normalised expected)")
    train.add_argument(
        "--normalize-rna", action="store_true", help="log-normalise raw RNA counts first (cmn.pp.log_normalize)"
    )
    train.add_argument(
        "--normalize-protein",
        choices=("clr", "none"),
        default="none",
        help="clr: CLR-normalise raw protein counts first (cmn.pp.clr); none: use as given (default)",
    )
    train.add_argument("--time-key", default=None, help="obs column with the time point")
    train.add_argument("--batch-key", default=None, help="obs column with a batch/donor covariate")
    train.add_argument("--holdout-time", default=None, help="hold out this time point as the test set")
    train.add_argument(
        "--preset", choices=["default", "paper"], default="default", help="model preset ('paper': Table S1)"
    )
    train.add_argument("--n-latent", type=int, default=512)
    train.add_argument("--max-epochs", type=int, default=500)
    train.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    train.add_argument(
        "--min-delta",
        type=float,
        default=None,
        help="smallest gain in validation per-protein r that counts for early stopping (default: the preset's)",
    )
    train.add_argument(
        "--standardize-protein", action="store_true", help="train on per-protein z-scores (small-data recipe)"
    )
    train.add_argument(
        "--input-group-lasso", type=float, default=0.0, help="group-lasso weight on MLP1's first layer (recipe: 1e-4)"
    )
    train.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    train.set_defaults(func=_lazy("train"))

    predict = sub.add_parser("predict", help="impute proteins for the cells of an .h5mu/.h5ad with a saved model")
    predict.add_argument("model", help="model folder written by `crossmodalnet train`")
    predict.add_argument("input", help=".h5mu, or an RNA-only .h5ad (genes matched to the model's by name)")
    predict.add_argument(
        "--out",
        required=True,
        help="output: .zarr or .h5ad (an AnnData of cells × proteins, written block by block from the input read "
        "backed, so memory stays flat for atlases of any size), .csv (cells × proteins table) or .h5mu (the input "
        "with the predictions in .obsm); other extensions are refused",
    )
    predict.add_argument("--rna-key", default=DEFAULT_RNA_KEY)
    predict.add_argument("--time", default=None, help="predict every cell at this time point")
    predict.add_argument(
        "--batch",
        default=None,
        help="predict every cell as this trained batch category (default: each cell's own; unseen or missing "
        "batches get the average batch embedding)",
    )
    predict.add_argument("--min-coverage", type=float, default=0.5, help="minimum fraction of model genes found")
    predict.add_argument("--batch-size", type=int, default=4096, help="cells read and predicted at a time")
    predict.add_argument(
        "--uncertainty",
        type=float,
        default=None,
        metavar="LEVEL",
        help="also write the spread and the central LEVEL interval (e.g. 0.9) of every value: layers std, lower, "
        "upper of a .zarr/.h5ad written from an .h5ad atlas, or .obsm of an .h5mu; needs a model saved with its "
        "calibration (`crossmodalnet train` saves it)",
    )
    predict.add_argument("--overwrite", action="store_true")
    predict.set_defaults(func=_lazy("predict"))
    _add_benchmark_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    args = build_parser().parse_args(argv)
    import crossmodalnet as cmn

    # the package's own logger prints its messages; no root handler, so no library line appears twice
    before = cmn.settings.verbosity
    cmn.settings.verbosity = "warning" if args.quiet else "info"
    try:
        return args.func(args)
    finally:
        cmn.settings.verbosity = before


if __name__ == "__main__":
    sys.exit(main())
