"""Implementations of the ``crossmodalnet`` subcommands (imported lazily by ``__main__``)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY

if TYPE_CHECKING:
    import argparse

    from mudata import MuData

logger = logging.getLogger("crossmodalnet")


class CLIError(Exception):
    """An error to report to the user in one line, without a traceback (exit status 2)."""


def _read(path: str, *, rna_key: str = DEFAULT_RNA_KEY, backed: bool = False) -> MuData:
    """Read an ``.h5mu`` (or an RNA-only ``.h5ad``, wrapped as a MuData) or fail with a clear message.

    With ``backed``, the matrices stay on disk (read-only) and are read in blocks by the streamed prediction.
    """
    import anndata as ad
    import mudata as md

    from crossmodalnet._utils import shared_feature_names_quiet
    from crossmodalnet.pp import to_mudata

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"input file not found: {p}")
    if p.suffix == ".h5mu":
        with shared_feature_names_quiet():
            return md.read_h5mu(p, backed="r" if backed else None)
    if p.suffix == ".h5ad":
        return to_mudata(ad.read_h5ad(p, backed="r" if backed else None), rna_key=rna_key)
    raise CLIError(f"unsupported input {p.name}: give an .h5mu (CITE-seq) or .h5ad (RNA only) file")


def _store_summary(path: Path) -> tuple[int, dict]:
    """Cells and ``uns`` of an on-disk AnnData, read without its matrix or cell names."""
    from anndata.io import read_elem

    if path.suffix == ".h5ad":
        import h5py

        with h5py.File(path, "r") as f:
            return int(f["X"].shape[0]), read_elem(f["uns"])
    import zarr

    group = zarr.open_group(path, mode="r")
    return int(group["X"].shape[0]), read_elem(group["uns"])


USER_ERRORS = (KeyError, ValueError, FileExistsError, FileNotFoundError)
"""Errors the package raises for bad input (validation); the CLI reports them in one line. Others are bugs and raise."""


def _known_errors(func):
    """Turn the package's input-validation errors into one-line CLI errors; let every other exception raise."""

    @functools.wraps(func)
    def wrapper(args):
        try:
            return func(args)
        except USER_ERRORS as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            raise CLIError(f"{type(err).__name__}: {msg}") from err

    return wrapper


def _save_calibrated(model, path: Path, *, overwrite: bool) -> None:
    """Calibrate the model's uncertainty on its validation cells, then save it (calibration included).

    So that ``crossmodalnet predict --uncertainty`` works from the saved folder alone, without training data.
    """
    try:
        model.calibrate_uncertainty()
    except ValueError as err:  # no held-out cells with observed proteins
        logger.warning("saved without an uncertainty calibration: %s", err)
    model.save(path, overwrite=overwrite)


@_known_errors
def train(args: argparse.Namespace) -> int:
    """``crossmodalnet train``: fit a model on a CITE-seq ``.h5mu`` and save it."""
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet._settings import quiet_third_party
    from crossmodalnet.model import CrossmodalNet

    mdata = _read(args.input)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} already exists; pass --overwrite to replace it")
    if args.normalize_rna:
        cmn.pp.log_normalize(mdata, rna_key=args.rna_key)
    if args.normalize_protein == "clr":
        cmn.pp.clr(mdata, protein_key=args.protein_key)
    with quiet_third_party():  # Lightning's "Seed set to ..." line
        scvi.settings.seed = args.seed
    CrossmodalNet.setup_mudata(
        mdata,
        rna_key=args.rna_key,
        protein_key=args.protein_key,
        rna_layer=args.rna_layer,
        protein_layer=args.protein_layer,
        time_key=args.time_key,
        batch_key=args.batch_key,
    )
    model = CrossmodalNet(
        mdata,
        preset=getattr(args, "preset", "default"),
        n_latent=args.n_latent,
        standardize_protein=args.standardize_protein or None,
    )
    holdout = args.holdout_time
    model.train(
        max_epochs=args.max_epochs,
        split="holdout_time" if holdout is not None else "random",
        holdout_time=_maybe_number(holdout),
        early_stopping_patience=args.patience,
        early_stopping_min_delta=args.min_delta,
        input_group_lasso=args.input_group_lasso,
        accelerator=args.accelerator,
        **({"enable_progress_bar": False} if args.quiet else {}),  # otherwise: only on a terminal
    )
    _save_calibrated(model, out, overwrite=args.overwrite)
    cmn.tl.predict_protein(mdata, model, rna_key=args.rna_key, protein_key=args.protein_key)
    metrics = mdata.uns[_keys.Keys(_keys.PROTEIN).uns].get("metrics")
    scores = (
        f"; on {metrics['n_cells']} {metrics['cells']} cells: Pearson per protein {metrics['pearson_protein']:.3f}, "
        f"per cell {metrics['pearson_cell']:.3f}, MSE {metrics['mse']:.3f}"
        if metrics
        else "; no test cells to score"
    )
    n_epochs = max(len(v) for v in model.history.values())
    print(f"trained {n_epochs} epochs{scores}; saved {out}/")
    return 0


def _maybe_number(value: str | None) -> object:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


def _close(mdata: MuData) -> None:
    """Close the files of a backed MuData, or of its backed modalities (an ``.h5ad`` read backed)."""
    if mdata.isbacked:
        mdata.file.close()
        return
    for adata in mdata.mod.values():
        if adata.isbacked:
            adata.file.close()


PREDICT_OUTPUTS = {
    ".zarr": "an AnnData of cells × proteins, streamed to disk",
    ".h5ad": "an AnnData of cells × proteins, streamed to disk",
    ".csv": "a cells × proteins table",
    ".h5mu": "the input MuData with the predictions in .obsm",
}


@_known_errors
def predict(args: argparse.Namespace) -> int:
    """``crossmodalnet predict``: impute proteins for the cells of an ``.h5mu``/``.h5ad`` file."""
    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    out = Path(args.out)
    if out.suffix not in PREDICT_OUTPUTS:
        choices = "; ".join(f"{ext}: {what}" for ext, what in PREDICT_OUTPUTS.items())
        raise CLIError(f"unsupported output {out.name}: --out must end in one of {choices}")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} already exists; pass --overwrite to replace it")
    streamed = out.suffix in (".zarr", ".h5ad")
    level = args.uncertainty
    if level is not None:
        if not 0.0 < level < 1.0:
            raise CLIError(f"--uncertainty takes the interval's level, between 0 and 1 (e.g. 0.9); got {level}")
        if out.suffix == ".csv":
            raise CLIError("--uncertainty writes intervals into a .zarr/.h5ad (layers) or an .h5mu (.obsm), not a .csv")
        if streamed and Path(args.input).suffix != ".h5ad":
            raise CLIError(
                "--uncertainty into a .zarr/.h5ad store reads an RNA-only .h5ad atlas (block by block); write the "
                "RNA modality to an .h5ad first, or use --out PRED.h5mu"
            )
    uncertainty = {"uncertainty": level is not None, **({"level": level} if level is not None else {})}
    model_dir = Path(args.model)
    model = CrossmodalNet.load(model_dir)
    if streamed and Path(args.input).suffix == ".h5ad":  # file to file: memory flat in the atlas's cells
        if not Path(args.input).exists():
            raise CLIError(f"input file not found: {args.input}")
        out.parent.mkdir(parents=True, exist_ok=True)
        cmn.tl.predict_atlas(
            args.input,
            model,
            out=out,
            time=_maybe_number(args.time),
            batch=args.batch,
            min_coverage=args.min_coverage,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            **uncertainty,
        )
        n_obs, uns = _store_summary(out)
        coverage = uns[_keys.PROTEIN].get("coverage")
        extra = f"; gene coverage {coverage:.1%}" if isinstance(coverage, float) else ""
        print(f"predicted {model.n_proteins} proteins for {n_obs} cells{extra}; wrote {out}")
        return 0
    mdata = _read(args.input, rna_key=args.rna_key, backed=streamed)
    kwargs = {
        "rna_key": args.rna_key,
        "time": _maybe_number(args.time),
        "batch": args.batch,
        "min_coverage": args.min_coverage,
        "batch_size": args.batch_size,
    }
    if streamed:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            cmn.tl.predict_protein(mdata, model, out=out, overwrite=args.overwrite, **kwargs)
        finally:
            _close(mdata)
        coverage = mdata.uns[_keys.Keys(_keys.PROTEIN).uns].get("coverage")
        extra = f"; gene coverage {coverage:.1%}" if isinstance(coverage, float) else ""
        print(f"predicted {model.n_proteins} proteins for {mdata.n_obs} cells{extra}; wrote {out}")
        return 0
    cmn.tl.predict_protein(mdata, model, **kwargs, **uncertainty)
    keys = _keys.Keys(_keys.PROTEIN)
    pred = mdata.obsm[keys.obsm]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".h5mu":
        mdata.write_h5mu(out)
    else:
        pred.to_csv(out)
    coverage = mdata.uns[keys.uns].get("coverage")
    extra = f"; gene coverage {coverage:.1%}" if isinstance(coverage, float) else ""
    print(f"predicted {pred.shape[1]} proteins for {pred.shape[0]} cells{extra}; wrote {out}")
    return 0


@_known_errors
def demo(args: argparse.Namespace) -> int:
    """``crossmodalnet demo``: train on the embedded (or generated) data, predict, evaluate, plot."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import pandas as pd
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet._metrics import prediction_metrics
    from crossmodalnet._utils import shared_feature_names_quiet
    from crossmodalnet.model import CrossmodalNet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = args.seed
    if args.data == "bmmc":
        mdata = cmn.datasets.bmmc_cite()
        covariate = "batch"  # the donor stands in for time: this data set has no time points
        what = "bmmc_cite (600 cells × 1,000 genes × 134 proteins; donor s1d1/s1d2 as the time covariate)"
    else:
        mdata = cmn.datasets.synthetic_cite(n_obs=2000, n_genes=2000, n_proteins=50, rng=args.seed)
        cmn.pp.log_normalize(mdata)
        cmn.pp.clr(mdata)
        covariate = "time"
        what = "synthetic_cite (2,000 cells × 2,000 genes × 50 proteins × 3 time points)"
    logger.info("data: %s", what)
    CrossmodalNet.setup_mudata(mdata, time_key=covariate)
    model = CrossmodalNet(mdata, n_latent=args.n_latent)
    model.train(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        **({"enable_progress_bar": False} if args.quiet else {}),  # otherwise: only on a terminal
    )
    cmn.tl.predict_protein(mdata, model)
    pred = mdata.obsm[_keys.Keys(_keys.PROTEIN).obsm]
    pred.to_csv(out / "predicted_proteins.csv")

    test = model.test_indices
    prot = mdata[DEFAULT_PROTEIN_KEY]
    true = np.asarray(prot.X.toarray() if hasattr(prot.X, "toarray") else prot.X)
    m = prediction_metrics(pred.to_numpy()[test], true[test])
    summary = pd.DataFrame(
        [
            {
                "data": what,
                "n_test_cells": len(test),
                "epochs": len(model.history["loss_train"]),
                "pearson_protein": m["pearson_protein"],
                "pearson_cell": m["pearson_cell"],
                "spearman_protein": m["spearman_protein"],
                "mse": m["mse"],
            }
        ]
    )
    summary.to_csv(out / "metrics.csv", index=False)
    pd.DataFrame(m["per_protein"], index=pred.columns).rename_axis("protein").to_csv(out / "per_protein_test.csv")

    order = np.argsort(-np.nan_to_num(m["per_protein"]["pearson"], nan=-1))
    top = [pred.columns[i] for i in order[:4]]
    with shared_feature_names_quiet():  # subsetting updates the MuData; 40 antibodies share a gene's name
        test_mdata = mdata[mdata.obs_names[test]].copy()
    cmn.pl.predicted_vs_observed(test_mdata, proteins=top, save=out / "predicted_vs_observed.png", show=False)
    cmn.pl.training_history(model, save=out / "training_history.png", show=False)
    cmn.tl.saliency(mdata, model, proteins=top[:1])
    cmn.pl.saliency_ranking(mdata, proteins=top[0], save=out / "saliency_top_genes.png", show=False)
    _save_calibrated(model, out / "model", overwrite=True)
    print(
        f"{what}\ntest cells: {len(test)}  per-protein Pearson {m['pearson_protein']:.3f}  "
        f"per-cell Pearson {m['pearson_cell']:.3f}  MSE {m['mse']:.4f}\nwrote {out}/"
    )
    return 0


@_known_errors
def benchmark(args: argparse.Namespace) -> int:
    """``crossmodalnet benchmark``: run :func:`crossmodalnet.benchmark.run_benchmark` and write its tables to ``--out``."""
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
        data_dir=args.data_dir,
        speed_timeout=args.speed_timeout,
    )
    n_failed = int(results["status"].str.startswith(("failed", "timeout")).sum())
    print(f"{len(results)} result rows ({n_failed} failed or timed out); wrote {args.out}/results.md")
    return 0
