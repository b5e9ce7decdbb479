"""Calibration of CrossmodalNet's uncertainty, side by side with totalVI's posterior intervals.

For every data set, setting (in-distribution; held-out interpolated time point where the set has
an ordered time) and seed, trains CrossmodalNet on the model's own split, calibrates its intervals on
the validation cells and scores the test cells:

- coverage of the nominal ``--level`` intervals (pooled over test cells × proteins, per set),
- mean interval width,
- the Spearman correlation between predicted spread and absolute error, per protein,
- for in-distribution test cells, the same with 50% of the genes removed from the query
  (``cmn.tl.predict_protein(..., uncertainty=True)`` imputes them and widens the intervals).

totalVI is trained on the raw counts of the same cells (the benchmark harness recipe,
:class:`crossmodalnet.benchmark._methods.TotalVIMethod`); its interval is the central ``--level``
interval of ``--n-samples`` posterior samples of denoised protein expression, each CLR-transformed
per cell like the target; its spread is their standard deviation.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py --out results/uncertainty --seeds 0,1,2

Writes ``summary.csv`` (one row per set × setting × method × seed), ``per_protein.csv`` and
``means.csv`` (means over seeds) into ``--out`` (git-ignored ``results/``). Numbers from the
200–750-cell sets are sanity checks, not paper-comparable benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

logger = logging.getLogger("uncertainty")

SETS = ("synthetic", "bmmc", "pbmc", "dyngen")


def load_dyngen(data_dir: Path):
    """``dyngen_bifurcating_200``: log-normalised RNA, CLR proteins, time = mean ``sim_time`` of each ``time_bin``."""
    import anndata as ad

    from crossmodalnet.benchmark import BenchmarkData, normalized_mudata

    folder = data_dir / "dyngen_bifurcating_200"
    rna, prot = ad.read_h5ad(folder / "rna.h5ad"), ad.read_h5ad(folder / "protein.h5ad")
    prot.var_names = [f"{v}_protein" for v in prot.var_names]
    mdata = normalized_mudata(rna, prot)
    centre = rna.obs.groupby("time_bin", observed=True)["sim_time"].mean().round(1)
    time = rna.obs["time_bin"].map(centre).astype(float).to_numpy()
    cats = sorted(np.unique(time).tolist())
    return BenchmarkData.from_mudata(
        mdata,
        name="dyngen_bifurcating_200",
        time=time.astype(object),
        time_categories=cats,
        time_role="mean sim_time of 4 time bins",
        holdout=cats[len(cats) // 2],
        sanity_check=True,
    )


def load_synthetic_small(seed: int = 0):
    """``synthetic_cite``: 600 cells × 500 genes × 20 proteins, days 2/3/4 (day 3 is held out)."""
    import crossmodalnet as cmn
    from crossmodalnet.benchmark import synthetic_benchmark_data

    mdata = cmn.datasets.synthetic_cite(n_obs=600, n_genes=500, n_proteins=20, n_time_points=3, rng=seed)
    return synthetic_benchmark_data(mdata, name="synthetic_cite_600")


def load(name: str, data_dir: Path):
    """A :class:`~crossmodalnet.benchmark._data.BenchmarkData` by short name."""
    from crossmodalnet.benchmark._data import load_bmmc, load_pbmc

    return {
        "synthetic": lambda: load_synthetic_small(0),
        "bmmc": lambda: load_bmmc(data_dir),
        "pbmc": lambda: load_pbmc(data_dir),
        "dyngen": lambda: load_dyngen(data_dir),
    }[name]()


def per_protein_spearman(spread: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Spearman correlation of spread and absolute error in each column (NaN for constant columns)."""
    out = np.full(spread.shape[1], np.nan)
    for j in range(spread.shape[1]):
        if np.ptp(spread[:, j]) > 0 and np.ptp(err[:, j]) > 0:
            out[j] = spearmanr(spread[:, j], err[:, j]).statistic
    return out


def scores(y, pred, lower, upper, spread) -> dict:
    """Coverage, width, rank correlations and accuracy of one method on the test cells."""
    from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein

    err = np.abs(y - pred)
    rho = per_protein_spearman(spread, err)
    inside = (y >= lower) & (y <= upper)
    return {
        "coverage": float(inside.mean()),
        "coverage_protein_min": float(inside.mean(axis=0).min()),
        "coverage_protein_max": float(inside.mean(axis=0).max()),
        "width": float((upper - lower).mean()),
        "spearman_mean": float(np.nanmean(rho)),
        "spearman_frac_positive": float(np.mean(rho[np.isfinite(rho)] > 0)),
        "spearman_pooled": float(spearmanr(spread.ravel(), err.ravel()).statistic),
        "pearson_protein": float(np.nanmean(pearson_per_protein(pred, y))),
        "pearson_cell": float(np.nanmean(pearson_per_cell(pred, y))),
        "_rho": rho,
    }


def run_cmn(data, split, seed: int, args) -> tuple[list[dict], object]:
    """Train CrossmodalNet on ``split``; rows for the test cells (and the 50%-genes query)."""
    import scvi
    import torch

    import crossmodalnet as cmn
    from crossmodalnet.benchmark._data import TRAIN_SIZE, VALIDATION_SIZE
    from crossmodalnet.model import CrossmodalNet

    mdata = data.to_mudata()
    scvi.settings.seed = seed
    torch.manual_seed(seed)
    CrossmodalNet.setup_mudata(mdata, time_key="time" if data.has_time else None)
    model = CrossmodalNet(mdata, n_latent=args.n_latent)
    kw = {"split": "random"}
    if split.setting == "heldout_time":
        kw = {"split": "holdout_time", "holdout_time": data.holdout}
    t0 = time.perf_counter()
    model.train(
        args.max_epochs,
        train_size=TRAIN_SIZE,
        validation_size=VALIDATION_SIZE,
        split_seed=seed,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )
    if not np.array_equal(np.sort(model.test_indices), np.sort(split.test)):
        raise RuntimeError("CrossmodalNet drew a different test split than the harness")
    t_train = time.perf_counter() - t0
    model.calibrate_uncertainty(n_samples=args.n_samples, rng=seed)
    test = np.sort(split.test)
    query = mdata[test].copy()
    y = data.Y[test].astype(np.float64)
    rows, per_protein = [], []
    base = {"set": data.name, "setting": split.setting, "method": "CrossmodalNet", "seed": seed}
    res = model.predict_protein(query, return_uncertainty=True, level=args.level, rng=seed)
    pred, std = res.mean.to_numpy(float), res.std.to_numpy(float)
    out = scores(y, pred, res.lower.to_numpy(float), res.upper.to_numpy(float), std)
    for cal in ("pooled", "protein"):
        try:
            k = model._multiplier(args.level, cal)
            out[f"coverage_{cal}_calibration"] = float(((y >= pred - k * std) & (y <= pred + k * std)).mean())
        except ValueError:
            out[f"coverage_{cal}_calibration"] = float("nan")
    out.update(
        query="test cells, all genes",
        n_test=len(test),
        n_calibration=int(model.uncertainty_["n_cells"]),
        train_s=round(t_train, 1),
    )
    if split.setting == "heldout_time":
        # the same held-out cells predicted at each neighbouring trained time point: how much wider the
        # interpolated intervals are, cell for cell, than intervals at a time point the model was trained on
        trained = np.unique(mdata.obs["time"].to_numpy()[np.sort(split.train)].astype(float))
        below, above = trained[trained < float(data.holdout)], trained[trained > float(data.holdout)]
        ratios = []
        for t in (below.max(), above.min()):
            category = next(c for c in model.time_categories if float(c) == t)
            at_t = model.predict_protein(query, time=category, return_uncertainty=True, level=args.level, rng=seed)
            ratios.append(out["width"] / float((at_t.upper - at_t.lower).to_numpy(float).mean()))
        out["width_ratio_vs_trained_time"] = float(np.mean(ratios))
        out["time_scale"] = float(model.uncertainty_.get("time_scale", np.nan))
    rows.append({**base, **out})
    per_protein.append(
        pd.DataFrame({**base, "query": "all genes", "protein": data.protein_names, "spearman": out["_rho"]})
    )
    if split.setting == "in_distribution":
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(data.X.shape[1], data.X.shape[1] // 2, replace=False))
        rna = query["rna"][:, keep].copy()
        q = cmn.pp.to_mudata(rna)
        if data.has_time:
            q.obs["time"] = query.obs["time"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cmn.tl.predict_protein(q, model, uncertainty=True, level=args.level, min_coverage=0.4, rng=seed)
        p2, s2 = q.obsm["cmn_protein"].to_numpy(float), q.obsm["cmn_protein_std"].to_numpy(float)
        o2 = scores(y, p2, q.obsm["cmn_protein_lower"].to_numpy(float), q.obsm["cmn_protein_upper"].to_numpy(float), s2)
        o2.update(
            query="test cells, 50% of genes missing",
            n_test=len(test),
            width_ratio_vs_all_genes=o2["width"] / out["width"],
        )
        rows.append({**base, **o2})
        per_protein.append(
            pd.DataFrame({**base, "query": "50% genes missing", "protein": data.protein_names, "spearman": o2["_rho"]})
        )
    return rows, per_protein


def run_totalvi(data, split, seed: int, args) -> tuple[list[dict], list]:
    """totalVI posterior intervals on the test cells (CLR of each posterior sample)."""
    from crossmodalnet.benchmark._methods import TotalVIMethod, clr_rows

    t0 = time.perf_counter()
    method = TotalVIMethod(seed=seed, threads=1, max_epochs=args.totalvi_epochs).fit_split(data, split)
    t_train = time.perf_counter() - t0
    test = np.sort(split.test)
    groups, targets = method.transform_batches(data, split, test)
    samples = np.zeros((args.n_samples, test.size, data.Y.shape[1]))
    for g, tb in targets.items():
        idx = np.flatnonzero(groups == g)
        _, prot = method.model_.get_normalized_expression(
            indices=test[idx],
            transform_batch=tb,
            n_samples=args.n_samples,
            include_protein_background=False,
            sample_protein_mixing=False,
            return_mean=False,
            return_numpy=True,
        )
        prot = np.moveaxis(np.asarray(prot), -1, 0)  # scvi returns cells × proteins × samples
        samples[:, idx] = np.stack([clr_rows(s) for s in prot])
    alpha = (1 - args.level) / 2
    lower, upper = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    pred = samples.mean(axis=0)
    y = data.Y[test].astype(np.float64)
    out = scores(y, pred, lower, upper, samples.std(axis=0))
    out.update(query="test cells, all genes", n_test=len(test), train_s=round(t_train, 1))
    base = {"set": data.name, "setting": split.setting, "method": "totalVI", "seed": seed}
    return [{**base, **out}], [
        pd.DataFrame({**base, "query": "all genes", "protein": data.protein_names, "spearman": out["_rho"]})
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/uncertainty")
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding the data sets")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--n-latent", type=int, default=128)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--totalvi-epochs", type=int, default=200)
    parser.add_argument("--n-samples", type=int, default=30)
    parser.add_argument("--no-totalvi", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    from crossmodalnet.benchmark._run import _split_of

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, per_protein = [], []
    for name in args.sets.split(","):
        data = load(name, Path(args.data_dir))
        settings = ["in_distribution"] + (["heldout_time"] if data.holdout is not None else [])
        for setting in settings:
            for seed in (int(s) for s in args.seeds.split(",")):
                split = _split_of(data, setting, seed)
                methods = [run_cmn] + ([] if args.no_totalvi else [run_totalvi])
                for run in methods:
                    r, pp = run(data, split, seed, args)
                    for row in r:
                        logger.info(
                            "%s %s %s seed %d %s: coverage %.3f, width %.2f, Spearman %.3f (%.0f%% > 0)",
                            row["set"], setting, row["method"], seed, row["query"], row["coverage"],
                            row["width"], row["spearman_mean"], 100 * row["spearman_frac_positive"],
                        )  # fmt: skip
                    rows += r
                    per_protein += pp
                    table = pd.DataFrame(rows).drop(columns="_rho")
                    table.to_csv(out / "summary.csv", index=False)
                    pd.concat(per_protein).to_csv(out / "per_protein.csv", index=False)
    table = pd.DataFrame(rows).drop(columns="_rho")
    numeric = table.select_dtypes("number").columns.drop("seed")
    means = table.groupby(["set", "setting", "method", "query"], sort=False)[list(numeric)].mean()
    means.to_csv(out / "means.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(means[["coverage", "width", "spearman_mean", "spearman_frac_positive", "pearson_protein"]].round(3))


if __name__ == "__main__":
    main()
