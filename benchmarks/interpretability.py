"""Does an attribution method find each protein's coding gene? Coding-gene rank on real and simulated data.

For every data set and every attribution method (a genes × proteins score table), ranks the genes of
each protein by |score| and reports the rank of the protein's coding gene
(:func:`crossmodalnet.benchmark.coding_gene_rank`: best rank among its genes, so complexes and
paralogues count once), summarised as the median over the proteins whose coding gene is measured.
Coding genes come from :func:`crossmodalnet.pp.protein_genes` for the human panels and are exact for
dyngen (protein i is the product of gene i).

Data sets (from ``--data-dir``, default ``../shared/data``):

- ``bmmc``: ``bmmc_cite_600`` as the benchmark harness loads it (log-normalised RNA, CLR ADT).
- ``pbmc``: ``pbmc1k_protein_v3`` (isotype controls dropped; ``cmn.pp.log_normalize`` and ``cmn.pp.clr``).
- ``dyngen``: ``dyngen_bifurcating_200`` (``cmn.pp.log_normalize`` on mRNA counts, ``cmn.pp.clr`` on
  protein molecule counts; proteins that are zero in every cell are left out).

Methods (further columns, e.g. the model's saliency, are added as entries of ``METHODS``):

- ``pearson_abs``: |Pearson correlation| of gene and protein over all cells (no training; the same for
  every seed).
- ``ridge_abs_std``: |coefficient| of a Ridge regression of each protein on all genes, in units of one
  gene standard deviation; genes standardised on the training cells, alpha chosen per protein on the
  validation cells, fitted on the training cells of the harness's 80/5/15 split.
- ``ridge_abs_raw``: the same fit's |coefficient| per unit of log-expression (``ridge_abs_std`` divided
  by the gene's sd), which favours low-variance genes the way raw gradients do.
- ``cmn_<method>_<aggregate>``: ``cmn.tl.saliency`` of a CrossmodalNet trained on the training cells of
  the same split (the split seed is the seed; validation cells for early stopping; 1 torch thread),
  aggregated over all cells. ``<method>`` is ``gradient`` (the paper's saliency), ``gradient_x_sd``,
  ``gradient_x_input`` (zero baseline), ``ig_zeros`` / ``ig_mean`` (integrated gradients from all-zero
  expression / the mean training cell) or ``smoothgrad``; ``<aggregate>`` is ``sum`` (signed) or
  ``abs`` (sum of magnitudes). The model's test Pearson (per protein and per cell) is reported beside.

The model configuration is an argument, so the table can be rerun when the model's defaults change:
``--config default`` (``CrossmodalNet(mdata)`` and ``model.train()`` with their defaults),
``--config paper`` (``preset="paper"`` where the model has presets, else the defaults, which are Table
S1), ``--config small_data`` (the small-data recipe), each refined by ``--model-kwargs`` and
``--train-kwargs`` (JSON). Results go to ``--out``/``<config name>``.

``--table basal`` writes the basal-state table instead: for ``synthetic`` (planted time, ``time_key``),
``bmmc`` (donors, ``batch_key``) and ``dyngen`` (time bins, ``time_key``), the covariate probe
(:func:`crossmodalnet.tl.covariate_probe`, on the test cells and on all cells) and scib-metrics scores
(iLISI and batch silhouette of the covariate; cell-type 15-NN accuracy, ASW and k-means NMI/ARI) of
the CrossmodalNet basal latent (``cmn``), a 50-PC PCA of the same log-normalised RNA (``pca``) and
totalVI's latent (``totalvi``, the benchmark harness's recipe), beside the model's test Pearson. Where
cell types are known, ``celltype_floor_test`` and ``celltype_floor_all`` are the probe on the one-hot
cell-type labels alone: what the covariate tells through the cell-type mix, which no embedding that
keeps the cell types can hide.

Usage::

    PYTHONPATH=src python benchmarks/interpretability.py                      # all sets, seeds 0 1 2
    PYTHONPATH=src python benchmarks/interpretability.py --datasets dyngen --seeds 0
    PYTHONPATH=src python benchmarks/interpretability.py --config paper --methods pearson_abs cmn_gradient_sum
    PYTHONPATH=src python benchmarks/interpretability.py --config-name wide --model-kwargs '{"n_latent": 256}'
    PYTHONPATH=src python benchmarks/interpretability.py --table basal --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import crossmodalnet as cmn
from crossmodalnet._metrics import prediction_metrics
from crossmodalnet.benchmark import METRICS, BenchmarkData, coding_gene_rank, make_split, normalized_mudata
from crossmodalnet.benchmark._data import load_bmmc, load_pbmc

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("interpretability")

ALPHAS = np.logspace(-3, 5, 17)
DATASETS = ("bmmc", "pbmc", "dyngen")


@dataclass
class Task:
    """One data set, one split and the protein → coding-gene mapping."""

    data: BenchmarkData
    mapping: dict[str, tuple[str, ...]]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    extra: dict
    config: dict = field(default_factory=dict)


def load_dyngen(data_dir: Path) -> BenchmarkData:
    """``dyngen_bifurcating_200``: log-normalised mRNA, CLR proteins, time bins as time."""
    import anndata as ad

    folder = Path(data_dir) / "dyngen_bifurcating_200"
    rna = ad.read_h5ad(folder / "rna.h5ad")
    prot = ad.read_h5ad(folder / "protein.h5ad")
    mdata = normalized_mudata(rna, prot)
    time = prot.obs["time_bin"]
    cats = [str(c) for c in time.cat.categories] if hasattr(time, "cat") else sorted(map(str, time.unique()))
    return BenchmarkData.from_mudata(
        mdata,
        name="dyngen_bifurcating_200",
        time=time.astype(str).to_numpy(dtype=object),
        time_categories=cats,
        time_role="time bin (4 bins of simulation time)",
        sanity_check=True,
    )


def load(name: str, data_dir: Path) -> tuple[BenchmarkData, dict[str, tuple[str, ...]]]:
    """A data set and its protein → coding-gene mapping (restricted to measured genes)."""
    data = {"bmmc": load_bmmc, "pbmc": load_pbmc, "dyngen": load_dyngen}[name](data_dir)
    if name == "dyngen":
        mapping = {p: (p,) for p in data.protein_names if p in set(data.gene_names)}
    else:
        table = cmn.pp.protein_genes(data.protein_names, genes=data.gene_names, errors="raise")
        mapping = dict(zip(table.index, table["genes"], strict=True))
    return data, mapping


def pearson_abs(task: Task) -> pd.DataFrame:
    """|Pearson correlation| of every gene with every protein over all cells (NaN for constant genes)."""
    X = task.data.X.astype(np.float64)
    Y = task.data.Y.astype(np.float64)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc.T @ Yc) / np.outer(np.sqrt((Xc**2).sum(0)), np.sqrt((Yc**2).sum(0)))
    r[~np.isfinite(r)] = np.nan
    return pd.DataFrame(np.abs(r), index=task.data.gene_names, columns=task.data.protein_names)


def _scores(pred: np.ndarray, true: np.ndarray) -> dict:
    """Mean per-protein and per-cell Pearson and MSE (the harness's accuracy columns)."""
    metrics = prediction_metrics(pred, true)
    return {k: metrics[k] for k in METRICS}


def _ridge(task: Task) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-protein-alpha Ridge on standardised genes: coefficients (genes × proteins), gene sds, test metrics."""
    from sklearn.linear_model import Ridge

    key = ("ridge", task.seed)
    if key in task.extra:
        return task.extra[key]
    X, Y = task.data.X.astype(np.float64), task.data.Y.astype(np.float64)
    mean, sd = X[task.train].mean(0), X[task.train].std(0)
    sd_safe = np.where(sd > 0, sd, 1.0)
    Z = (X - mean) / sd_safe
    coefs, val_mse = [], []
    for alpha in ALPHAS:
        fit = Ridge(alpha=alpha).fit(Z[task.train], Y[task.train])
        coefs.append(fit.coef_.T)  # genes × proteins
        val_mse.append(((fit.predict(Z[task.val]) - Y[task.val]) ** 2).mean(0))
    best = np.argmin(np.vstack(val_mse), axis=0)  # per protein
    coef = np.stack([coefs[b][:, j] for j, b in enumerate(best)], axis=1)
    coef[sd == 0] = 0.0
    intercept = Y[task.train].mean(0)
    pred = Z[task.test] @ coef + intercept
    metrics = _scores(pred, Y[task.test])
    metrics["median_alpha"] = float(np.median(ALPHAS[best]))
    task.extra[key] = (coef, sd, metrics)
    return task.extra[key]


def ridge_abs_std(task: Task) -> pd.DataFrame:
    """|Ridge coefficient| per gene standard deviation (genes standardised on training cells)."""
    coef, _, _ = _ridge(task)
    return pd.DataFrame(np.abs(coef), index=task.data.gene_names, columns=task.data.protein_names)


def ridge_abs_raw(task: Task) -> pd.DataFrame:
    """The same Ridge fit's |coefficient| per unit of log-expression."""
    coef, sd, _ = _ridge(task)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(sd[:, None] > 0, np.abs(coef) / np.where(sd > 0, sd, 1.0)[:, None], np.nan)
    return pd.DataFrame(raw, index=task.data.gene_names, columns=task.data.protein_names)


CONFIGS: dict[str, dict] = {
    "default": {"model_kwargs": {}, "train_kwargs": {}},
    "paper": {"model_kwargs": {"preset": "paper"}, "train_kwargs": {}},
    "small_data": {
        "model_kwargs": {"standardize_protein": True},
        "train_kwargs": {"input_group_lasso": 1e-4, "early_stopping_patience": 50},
    },
}
"""Named model configurations: keyword arguments of ``CrossmodalNet(...)`` and of ``model.train(...)``."""


def resolve_config(name: str, model_kwargs: dict, train_kwargs: dict) -> dict:
    """A named configuration refined by explicit keyword arguments; ``preset`` is dropped where unsupported."""
    from crossmodalnet.model import CrossmodalNet

    base = CONFIGS[name]
    model_kw = {**base["model_kwargs"], **model_kwargs}
    train_kw = {**base["train_kwargs"], **train_kwargs}
    note = ""
    if "preset" in model_kw and "preset" not in inspect.signature(CrossmodalNet.__init__).parameters:
        model_kw.pop("preset")
        note = "this CrossmodalNet has no `preset` argument: its defaults (Table S1) are used"
    return {"model_kwargs": model_kw, "train_kwargs": train_kw, "note": note}


def _model(task: Task):
    """A CrossmodalNet trained on the task's training cells (early stopping on its validation cells), cached."""
    import scvi
    import torch

    from crossmodalnet.benchmark._data import TRAIN_SIZE, VALIDATION_SIZE
    from crossmodalnet.model import CrossmodalNet

    key = ("model", task.seed)
    if key in task.extra:
        return task.extra[key]
    data = task.data
    mdata = data.to_mudata()
    scvi.settings.seed = task.seed
    torch.manual_seed(task.seed)
    CrossmodalNet.setup_mudata(mdata, time_key="time" if data.has_time else None)
    model = CrossmodalNet(mdata, **task.config.get("model_kwargs", {}))
    train_kw = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **task.config.get("train_kwargs", {}),
    }
    t0 = _time.perf_counter()
    model.train(
        split="random", train_size=TRAIN_SIZE, validation_size=VALIDATION_SIZE, split_seed=task.seed, **train_kw
    )
    seconds = _time.perf_counter() - t0
    for what, mine, theirs in (("train", task.train, model.train_indices), ("test", task.test, model.test_indices)):
        if not np.array_equal(np.sort(np.asarray(theirs)), np.sort(mine)):
            raise RuntimeError(f"the model drew another {what} split than the harness")
    pred = model.predict_protein(mdata).to_numpy()
    metrics = _scores(pred[task.test], data.Y[task.test])
    metrics |= {"epochs": len(model.history["loss_train"]), "train_seconds": seconds}
    print(
        f"  seed {task.seed} model: {metrics['epochs']} epochs in {seconds:.0f} s; test Pearson per protein "
        f"{metrics['pearson_protein']:.3f}, per cell {metrics['pearson_cell']:.3f}",
        flush=True,
    )
    task.extra[key] = (model, mdata, metrics)
    return task.extra[key]


def _saliency_method(method: str, aggregate: str, **kwargs) -> Callable[[Task], pd.DataFrame]:
    def scores(task: Task) -> pd.DataFrame:
        model, mdata, _ = _model(task)
        return model.get_saliency(mdata, proteins=list(task.mapping), method=method, aggregate=aggregate, **kwargs)

    scores.__doc__ = f"cmn saliency: method={method!r}, aggregate={aggregate!r} {kwargs or ''}".rstrip()
    return scores


SALIENCY_METHODS: dict[str, Callable[[Task], pd.DataFrame]] = {
    "cmn_gradient_sum": _saliency_method("gradient", "sum"),
    "cmn_gradient_abs": _saliency_method("gradient", "abs_sum"),
    "cmn_gradient_x_sd_sum": _saliency_method("gradient_x_sd", "sum"),
    "cmn_gradient_x_sd_abs": _saliency_method("gradient_x_sd", "abs_sum"),
    "cmn_gradient_x_input_abs": _saliency_method("gradient_x_input", "abs_sum"),
    "cmn_ig_zeros_sum": _saliency_method("integrated_gradients", "sum", baseline="zeros"),
    "cmn_ig_zeros_abs": _saliency_method("integrated_gradients", "abs_sum", baseline="zeros"),
    "cmn_ig_mean_abs": _saliency_method("integrated_gradients", "abs_sum", baseline="mean"),
    "cmn_smoothgrad_sum": _saliency_method("smoothgrad", "sum"),
    "cmn_smoothgrad_abs": _saliency_method("smoothgrad", "abs_sum"),
}


METHODS: dict[str, Callable[[Task], pd.DataFrame]] = {
    "pearson_abs": pearson_abs,
    "ridge_abs_std": ridge_abs_std,
    "ridge_abs_raw": ridge_abs_raw,
    **SALIENCY_METHODS,
}
"""Attribution methods: each maps a task to a genes × proteins score table (larger |score| = more important)."""


# --- basal state: is the covariate removed from the model's latent? ---------------------------------

BASAL_DATASETS = ("synthetic", "bmmc", "dyngen")
EMBEDDINGS = ("cmn", "pca", "totalvi")


def load_basal(name: str, data_dir: Path) -> tuple[BenchmarkData, np.ndarray | None, str]:
    """A data set for the basal-state table, its cell-type labels (``None``: none) and the covariate's role.

    ``synthetic``: :func:`~crossmodalnet.datasets.synthetic_cite` with 1,200 cells, 500 genes, 20 proteins,
    three days and ``time_effect=3`` (time registered as ``time_key``; cell types: the planted states, whose
    proportions drift with time). ``bmmc``: the donors of ``bmmc_cite_600`` as ``batch_key``, cell types
    from ``obs['cell_type']``. ``dyngen``: the four time bins of ``dyngen_bifurcating_200`` as ``time_key``
    (no cell types).
    """
    import anndata as ad

    from crossmodalnet.benchmark import synthetic_benchmark_data

    if name == "synthetic":
        mdata = cmn.datasets.synthetic_cite(n_obs=1200, n_genes=500, n_proteins=20, time_effect=3.0, rng=0)
        cells = mdata.obs["cell_state"].astype(str).to_numpy()
        return synthetic_benchmark_data(mdata, name="synthetic_time3"), cells, "time"
    if name == "bmmc":
        data = load_bmmc(data_dir)
        obs = ad.read_h5ad(Path(data_dir) / "bmmc_cite_600" / "rna.h5ad", backed="r").obs
        return data, obs["cell_type"].astype(str).reindex(data.obs_names).to_numpy(), "batch"
    if name == "dyngen":
        return load_dyngen(data_dir), None, "time"
    raise ValueError(f"Unknown data set {name!r}; choose from {list(BASAL_DATASETS)}.")


def _cmn_latent(task: Task, role: str) -> tuple[np.ndarray, dict]:
    """Basal latent of every cell from a CrossmodalNet with the covariate registered as ``role``."""
    import scvi
    import torch

    from crossmodalnet.model import CrossmodalNet

    mdata = task.data.to_mudata()
    scvi.settings.seed = task.seed
    torch.manual_seed(task.seed)
    CrossmodalNet.setup_mudata(mdata, **{f"{role}_key": "time"})
    model = CrossmodalNet(mdata, **task.config.get("model_kwargs", {}))
    train_kw = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
    # the harness's split: the model would stratify a `batch_key` covariate differently
    split = {"external_indexing": [np.asarray(task.train), np.asarray(task.val), np.asarray(task.test)]}
    model.train(datasplitter_kwargs=split, split_seed=task.seed, **(train_kw | task.config.get("train_kwargs", {})))
    if not np.array_equal(np.sort(np.asarray(model.test_indices)), np.sort(task.test)):
        raise RuntimeError("the model drew another test split than the harness")
    pred = model.predict_protein(mdata).to_numpy()
    metrics = prediction_metrics(pred[task.test], task.data.Y[task.test])
    metrics.pop("per_protein")
    return model.get_latent_representation(mdata), metrics


def _totalvi_latent(task: Task) -> np.ndarray:
    """totalVI latent of every cell (the harness's recipe: the covariate is totalVI's batch, test cells a query)."""
    from crossmodalnet.benchmark._methods import Split, TotalVIMethod

    method = TotalVIMethod(seed=task.seed, threads=1)
    method.fit_split(task.data, Split("in_distribution", task.seed, task.train, task.val, task.test))
    return np.asarray(method.model_.get_latent_representation())


def embedding_scores(x: np.ndarray, covariate: np.ndarray, cells: np.ndarray | None, test: np.ndarray) -> dict:
    """Probe and scib-metrics scores of one embedding (all cells unless named ``_test``)."""
    import anndata as ad
    import scib_metrics
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    def probe(rows: np.ndarray) -> tuple[float, float]:
        adata = ad.AnnData(np.zeros((rows.size, 1), dtype=np.float32))
        adata.obs["cov"] = covariate[rows].astype(str)
        adata.obsm["X"] = x[rows]
        counts = adata.obs["cov"].value_counts()
        adata = adata[adata.obs["cov"].isin(counts.index[counts >= 5]).to_numpy()].copy()
        if adata.obs["cov"].nunique() < 2:
            return float("nan"), float("nan")
        cmn.tl.covariate_probe(adata, key="cov", obsm_key="X", key_added="probe")
        return float(adata.uns["probe"]["balanced_accuracy"]), float(adata.uns["probe"]["chance"])

    n = x.shape[0]
    # categories with fewer than 5 test cells are left out of the test probe, so its chance can differ
    out = dict(zip(("probe_test", "chance_test"), probe(np.sort(test)), strict=True))
    out |= dict(zip(("probe_all", "chance_all"), probe(np.arange(n)), strict=True))
    k = min(90, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    out["ilisi"] = float(scib_metrics.ilisi_knn(NeighborsResults(indices=idx, distances=dist), covariate))
    labels = np.zeros(n, dtype=int) if cells is None else cells
    out["batch_silhouette"] = float(scib_metrics.silhouette_batch(x, labels, covariate))
    if cells is not None:
        counts = pd.Series(cells).value_counts()
        keep = np.isin(cells, counts.index[counts >= 5])
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        knn = cross_val_score(KNeighborsClassifier(n_neighbors=15), x[keep], cells[keep], cv=folds)
        out["celltype_knn"] = float(knn.mean())
        out["celltype_asw"] = float(scib_metrics.silhouette_label(x, cells))
        out |= {f"celltype_{m}": float(v) for m, v in scib_metrics.nmi_ari_cluster_labels_kmeans(x, cells).items()}
    return out


def run_basal(
    datasets: list[str], seeds: list[int], data_dir: Path, embeddings: list[str], config: dict | None = None
) -> pd.DataFrame:
    """One row per data set, seed and embedding: covariate probe and scib-metrics scores."""
    import scanpy as sc

    rows = []
    for name in datasets:
        data, cells, role = load_basal(name, data_dir)
        covariate = np.asarray(data.time).astype(str)
        pca = sc.pp.pca(data.X.astype(np.float32), n_comps=min(50, min(data.X.shape) - 1), random_state=0)
        for seed in seeds:
            train, val, test = make_split(data, "in_distribution", seed=seed)
            task = Task(data, {}, train, val, test, seed, {}, config or {})
            latents = {"pca": (pca, {})}
            if "cmn" in embeddings:
                latents["cmn"] = _cmn_latent(task, role)
            if "totalvi" in embeddings:
                latents["totalvi"] = (_totalvi_latent(task), {})
            # the floor: the probe on the cell-type labels alone (one-hot), where cell types are known
            floor = {}
            if cells is not None:
                onehot = pd.get_dummies(pd.Series(cells)).to_numpy(np.float32)
                scores = embedding_scores(onehot, covariate, None, test)
                floor = {"celltype_floor_test": scores["probe_test"], "celltype_floor_all": scores["probe_all"]}
            for emb in embeddings:
                x, metrics = latents[emb]
                row = {"dataset": data.name, "covariate": f"{role}_key", "seed": seed, "embedding": emb}
                row |= embedding_scores(x, covariate, cells, test) | floor
                row |= {f"model_test_{k}": v for k, v in metrics.items()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return pd.DataFrame(rows)


def run(
    datasets: list[str], seeds: list[int], data_dir: Path, methods: list[str], config: dict | None = None
) -> tuple[pd.DataFrame, ...]:
    """Per-protein ranks, per-seed summary and mean-over-seeds summary (``config``: see :func:`resolve_config`)."""
    per_protein, summary = [], []
    for name in datasets:
        data, mapping = load(name, data_dir)
        constant = data.Y.std(0) == 0
        evaluated = {p: g for p, g in mapping.items() if g and not constant[data.protein_names.get_loc(p)]}
        print(
            f"{data.describe()}; {len(evaluated)} proteins with a measured coding gene and a non-constant value "
            f"({int(constant.sum())} constant proteins left out)",
            flush=True,
        )
        for seed in seeds:
            train, val, test = make_split(data, "in_distribution", seed=seed)
            task = Task(data, evaluated, train, val, test, seed, {}, config or {})
            for method in methods:
                t0 = _time.perf_counter()
                scores = METHODS[method](task)[list(evaluated)]
                seconds = _time.perf_counter() - t0
                ranks = coding_gene_rank(scores, evaluated)
                ranks = ranks.assign(dataset=name, method=method, seed=seed).reset_index()
                per_protein.append(ranks)
                row = {
                    "dataset": name,
                    "method": method,
                    "seed": seed,
                    "n_proteins": len(ranks),
                    "n_genes": data.X.shape[1],
                    "median_rank": float(ranks["rank"].median()),
                    "top10_fraction": float((ranks["rank"] <= 10).mean()),
                }
                if method.startswith("ridge"):
                    _, _, metrics = _ridge(task)
                    row |= {f"ridge_test_{k}": v for k, v in metrics.items()}
                if method.startswith("cmn_"):
                    _, _, metrics = _model(task)
                    row |= {f"model_test_{k}": v for k, v in metrics.items()}
                    row["saliency_seconds"] = seconds
                summary.append(row)
                print(
                    f"  seed {seed} {method:>14}: median coding-gene rank {row['median_rank']:.1f} "
                    f"of {row['n_genes']} ({row['n_proteins']} proteins)",
                    flush=True,
                )
    per_protein = pd.concat(per_protein, ignore_index=True)
    summary = pd.DataFrame(summary)
    mean = (
        summary.groupby(["dataset", "method"], sort=False)
        .agg(
            n_proteins=("n_proteins", "first"),
            n_genes=("n_genes", "first"),
            median_rank_mean=("median_rank", "mean"),
            median_rank_sd=("median_rank", "std"),
            median_rank_per_seed=("median_rank", lambda s: " / ".join(f"{v:g}" for v in s)),
        )
        .reset_index()
    )
    return per_protein, summary, mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table", default="coding_gene_rank", choices=["coding_gene_rank", "basal"], help="which table to write"
    )
    parser.add_argument("--datasets", nargs="+", default=None, choices=sorted({*DATASETS, *BASAL_DATASETS}))
    parser.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS), choices=EMBEDDINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--config", default="default", choices=list(CONFIGS), help="model configuration")
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON: more CrossmodalNet(...) arguments")
    parser.add_argument("--train-kwargs", type=json.loads, default={}, help="JSON: more model.train(...) arguments")
    parser.add_argument("--config-name", default=None, help="name of the results folder (default: --config)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="folder holding the data sets")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/interpretability"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    config = resolve_config(args.config, args.model_kwargs, args.train_kwargs)
    name = args.config_name or args.config
    print(f"model configuration {name!r}: {config}", flush=True)
    if args.table == "basal":
        table = run_basal(args.datasets or list(BASAL_DATASETS), args.seeds, args.data_dir, args.embeddings, config)
        table.insert(0, "config", name)
        mean = (
            table.groupby(["dataset", "covariate", "embedding"], sort=False)
            .mean(numeric_only=True)
            .drop(columns="seed")
        )
        args.out = args.out / name
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "basal_state_per_seed.tsv", sep="\t", index=False)
        mean.to_csv(args.out / "basal_state.tsv", sep="\t")
        print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"\nwritten to {args.out}/")
        return
    args.datasets = args.datasets or list(DATASETS)
    per_protein, summary, mean = run(args.datasets, args.seeds, args.data_dir, args.methods, config)
    for table in (per_protein, summary, mean):
        table.insert(0, "config", name)
    args.out = args.out / name
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(config, indent=2))
    per_protein.to_csv(args.out / "coding_gene_rank_per_protein.tsv", sep="\t", index=False)
    summary.to_csv(args.out / "coding_gene_rank_per_seed.tsv", sep="\t", index=False)
    mean.to_csv(args.out / "coding_gene_rank.tsv", sep="\t", index=False)
    print()
    print(mean.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\nwritten to {args.out}/")


if __name__ == "__main__":
    main()
