"""Lever screen for the default model: which existing option, added to the default preset, raises accuracy.

Every lever is the default model (``CrossmodalNet(mdata)``) plus existing model or training
arguments, trained through the public API on the harness's in-distribution split (80/5/15,
stratified by time point; :func:`crossmodalnet.benchmark.make_split`, checked against the
model's own split). For each data set and seed the script records validation and test per-protein
and per-cell Pearson, test MSE, the restored epoch and the fit time. Ridge and LightGBM (the
harness methods, fitted on the same training cells and selected on the same validation cells) are
reference rows. The seed sets the data generation (synthetic sets), the split and the model seed.
``--setting heldout_time`` uses the harness's held-out middle time point instead (dyngen and the
synthetic sets; write it to another ``--out`` folder).

Levers (``--levers``):

- ``default``: ``CrossmodalNet(mdata)``, ``train()``.
- ``ensemble``: mean prediction of 3 default models, model seeds ``seed``, ``seed + 1000`` and
  ``seed + 2000`` on the same split (member 0 is the ``default`` run); its fit time is the sum.
- ``svd``: ``input_reduction="svd"`` (MLP input: a TruncatedSVD of the training RNA; the linear path
  still sees every gene) with ``n_input_features`` = 256, or the largest power of two below the
  numbers of training cells and genes when that is smaller.
- ``screen256``, ``screen512``: ``input_reduction="screen"`` with ``n_input_features`` 256 or 512 (MLP
  input: the genes most correlated with the proteins over the training cells, every protein's best
  genes first; the linear path still sees every gene), or the number of genes - 1 when that is smaller.
- ``linpath_auto``: ``linear_path_genes="auto"`` (the linear path's genes, all or the top 64, 256 or
  1,024 screened genes, chosen with its penalty on the validation cells).
- ``group_lasso``: ``train(input_group_lasso=1e-4, early_stopping_patience=50)``.
- ``patience50``: ``train(early_stopping_patience=50)``; likewise ``patience<N>``.
- ``lat<N>``, ``dropout<X>``: ``n_latent=N``, ``dropout_rate=X``; ``bs<N>``, ``lr<X>``, ``wd<X>``:
  ``train(batch_size=N)``, ``train(lr=X)``, ``train(weight_decay=X)``; ``nodis``: ``train(disentangle_epochs=0)``.
- Levers joined by ``+`` combine their arguments, e.g. ``screen512+bs512`` or ``screen512+lr2e-3+nodis``.
- ``latent128``: ``n_latent=128``.
- ``regularised``: ``dropout_rate=0.3`` and ``train(lr=3e-4, weight_decay=1e-3)`` (the variant with the
  best validation score among the Table S1 search-space variants tried on synthetic D1; docs page
  *Benchmarks*, "What was tried for CrossmodalNet on synthetic D1").

Results are appended to ``levers.csv`` (a rerun skips rows already there), the ensemble members'
predictions are kept in ``preds/``, and ``levers.md`` holds the tables::

    python benchmarks/levers.py --out /work/runs/issue12/levers --seeds 0,1,2 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = ("bmmc", "pbmc", "dyngen", "synthetic:D1", "programs:D1")
LEVERS = (
    "default",
    "ensemble",
    "svd",
    "group_lasso",
    "patience50",
    "latent128",
    "regularised",
    "screen256",
    "screen512",
    "linpath_auto",
)
REFERENCES = ("ridge", "lightgbm")
_NUMERIC_PARTS = (
    ("lat", "model", "n_latent", int),
    ("dropout", "model", "dropout_rate", float),
    ("bs", "train", "batch_size", int),
    ("lr", "train", "lr", float),
    ("wd", "train", "weight_decay", float),
    ("patience", "train", "early_stopping_patience", int),
    ("ema", "train", "ema_decay", float),
)
"""Parts of a combined lever (``"screen512+bs512"``) that set one number: prefix, where it goes, argument, type."""
ENSEMBLE_OFFSETS = (0, 1000, 2000)
_TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def lever_arguments(lever: str, n_train: int, n_genes: int) -> tuple[dict, dict]:
    """Model and ``train`` keyword arguments of a single-model lever (``default`` for ensemble members).

    Parameters
    ----------
    lever
        A name of ``LEVERS``.
    n_train, n_genes
        Training cells and genes (they bound the number of SVD components).

    Returns
    -------
    Keyword arguments of :class:`~crossmodalnet.model.CrossmodalNet` and of its ``train``.
    """
    if "+" in lever:  # a combination, e.g. "screen512+nodis+bs512": the parts' arguments merged
        model_kwargs, train_kwargs = {}, {}
        for part in lever.split("+"):
            m, t = lever_arguments(part, n_train, n_genes)
            model_kwargs.update(m)
            train_kwargs.update(t)
        return model_kwargs, train_kwargs
    if lever in ("default", "ensemble"):
        return {}, {}
    for prefix, target, key, cast in _NUMERIC_PARTS:
        if lever.startswith(prefix) and lever[len(prefix) :].replace(".", "").replace("e-", "").isdigit():
            value = cast(lever[len(prefix) :])
            return ({key: value}, {}) if target == "model" else ({}, {key: value})
    if lever == "nodis":
        return {}, {"disentangle_epochs": 0}
    if lever == "svd":
        k = 256
        while k >= min(n_train, n_genes):
            k //= 2
        return {"input_reduction": "svd", "n_input_features": k}, {}
    if lever.startswith("screen") and lever[6:].isdigit():
        return {"input_reduction": "screen", "n_input_features": min(int(lever[6:]), n_genes - 1)}, {}
    if lever == "linpath_auto":
        return {"linear_path_genes": "auto"}, {}
    if lever == "group_lasso":
        return {}, {"input_group_lasso": 1e-4, "early_stopping_patience": 50}
    if lever == "latent128":
        return {"n_latent": 128}, {}
    if lever == "regularised":
        return {"dropout_rate": 0.3}, {"lr": 3e-4, "weight_decay": 1e-3}
    raise ValueError(f"Unknown lever {lever!r}; choose from {LEVERS}.")


def scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Mean per-protein Pearson, mean per-cell Pearson and MSE of ``pred`` (cells × proteins) against ``true``."""
    from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein

    pred, true = pred.astype(np.float64), true.astype(np.float64)
    return (
        float(np.nanmean(pearson_per_protein(pred, true))),
        float(np.nanmean(pearson_per_cell(pred, true))),
        float(np.mean((pred - true) ** 2)),
    )


def fit_crossmodalnet(data, split, *, model_seed: int, model_kwargs: dict, train_kwargs: dict, max_epochs=None):
    """Train ``CrossmodalNet(mdata, **model_kwargs)`` on the harness split.

    Parameters
    ----------
    data : crossmodalnet.benchmark.BenchmarkData
        The data set.
    split : crossmodalnet.benchmark.Split
        The harness split; the model's own split is checked to equal it.
    model_seed : int
        ``scvi.settings.seed`` and torch seed of the model.
    model_kwargs, train_kwargs : dict
        Arguments of :class:`~crossmodalnet.model.CrossmodalNet` and of its ``train``.
    max_epochs : int or None
        ``max_epochs`` of ``train`` (``None``: the preset's value).

    Returns
    -------
    tuple
        Predictions of all cells (cells × proteins), fit seconds and the restored epoch.
    """
    import scvi
    import torch

    from crossmodalnet.benchmark._data import TRAIN_SIZE, VALIDATION_SIZE
    from crossmodalnet.model import CrossmodalNet

    mdata = data.to_mudata()
    scvi.settings.seed = model_seed
    torch.manual_seed(model_seed)
    CrossmodalNet.setup_mudata(mdata, time_key="time" if data.has_time else None)
    start = time.perf_counter()
    model = CrossmodalNet(mdata, **model_kwargs)
    model.train(
        max_epochs,
        **(
            {"split": "holdout_time", "holdout_time": data.holdout}
            if split.setting == "heldout_time"
            else {"split": "random"}
        ),
        train_size=TRAIN_SIZE,
        validation_size=VALIDATION_SIZE,
        split_seed=split.seed,
        **_TRAIN,
        **train_kwargs,
    )
    fit_s = time.perf_counter() - start
    for mine, theirs in ((split.train, model.train_indices), (split.val, model.validation_indices)):
        if not np.array_equal(np.sort(mine), np.sort(np.asarray(theirs))):
            raise RuntimeError("the model drew a different split than the harness")
    pred = model.predict_protein().to_numpy(dtype=np.float32)
    return pred, fit_s, model.split_.get("best_epoch")


def fit_reference(key: str, data, split, *, seed: int, threads: int):
    """Fit a harness method on the training cells, selecting on the validation cells.

    Parameters
    ----------
    key : str
        Method key of the harness (``"ridge"``, ``"lightgbm"``, ...).
    data, split
        As in :func:`fit_crossmodalnet`.
    seed, threads : int
        Seed and threads of the method.

    Returns
    -------
    tuple
        Predictions of all cells, fit seconds and ``None`` (no epochs).
    """
    from crossmodalnet.benchmark import make_method

    method = make_method(key, seed=seed, threads=threads)
    start = time.perf_counter()
    tr, va = split.train, split.val
    method.fit(data.X[tr], data.Y[tr], data.X[va], data.Y[va], data.time[tr], data.time[va])
    fit_s = time.perf_counter() - start
    return method.predict(data.X, data.time), fit_s, None


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Run every data set × seed × lever not yet in ``levers.csv``.

    Parameters
    ----------
    args : argparse.Namespace
        ``out``, ``data``, ``data_dir``, ``seeds``, ``setting``, ``levers``, ``references``, ``threads`` and
        ``max_epochs`` as parsed by
        :func:`main`.

    Returns
    -------
    pandas.DataFrame
        Every row of ``levers.csv``.
    """
    import torch

    from crossmodalnet.benchmark import Split, load_dataset, make_split

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "preds").mkdir(parents=True, exist_ok=True)
    csv = out / "levers.csv"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["dataset", "seed", "lever"])
    have = set(zip(done["dataset"], done["seed"], done["lever"], strict=True))
    rows = done.to_dict("records")
    levers = [x for x in args.levers.split(",") if x]
    references = [x for x in args.references.split(",") if x]
    for spec in args.data.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            data = load_dataset(spec, seed=seed, data_dir=args.data_dir)
            if args.setting == "heldout_time" and data.holdout is None:
                logging.info("skipping %s: %s", data.name, data.holdout_reason)
                continue
            train, val, test = make_split(data, args.setting, seed=seed)
            split = Split(args.setting, seed, train, val, test)
            for lever in [*levers, *references]:
                if (data.name, seed, lever) in have:
                    continue
                if lever in references:
                    pred, fit_s, best = fit_reference(lever, data, split, seed=seed, threads=args.threads)
                elif lever == "ensemble":
                    preds, fit_s = [], 0.0
                    for offset in ENSEMBLE_OFFSETS:
                        path = out / "preds" / f"{data.name}_seed{seed}_member{offset}.npz"
                        if path.is_file():
                            saved = np.load(path)
                            p, s = saved["pred"], float(saved["fit_s"])
                        else:
                            p, s, _ = fit_crossmodalnet(
                                data,
                                split,
                                model_seed=seed + offset,
                                model_kwargs={},
                                train_kwargs={},
                                max_epochs=args.max_epochs,
                            )
                            np.savez_compressed(path, pred=p, fit_s=s)
                        preds.append(p)
                        fit_s += s
                    pred, best = np.mean(preds, axis=0), None
                else:
                    model_kwargs, train_kwargs = lever_arguments(lever, len(train), data.X.shape[1])
                    pred, fit_s, best = fit_crossmodalnet(
                        data,
                        split,
                        model_seed=seed,
                        model_kwargs=model_kwargs,
                        train_kwargs=train_kwargs,
                        max_epochs=args.max_epochs,
                    )
                    if lever == "default":
                        path = out / "preds" / f"{data.name}_seed{seed}_member0.npz"
                        np.savez_compressed(path, pred=pred, fit_s=fit_s)
                v_pp, v_pc, v_mse = scores(pred[val], data.Y[val])
                t_pp, t_pc, t_mse = scores(pred[test], data.Y[test])
                rows.append(
                    {
                        "dataset": data.name,
                        "seed": seed,
                        "lever": lever,
                        "val_pearson_protein": v_pp,
                        "val_pearson_cell": v_pc,
                        "val_mse": v_mse,
                        "test_pearson_protein": t_pp,
                        "test_pearson_cell": t_pc,
                        "test_mse": t_mse,
                        "fit_seconds": fit_s,
                        "best_epoch": best,
                        "n_train": len(train),
                        "n_val": len(val),
                        "n_test": len(test),
                    }
                )
                logging.info("%s", rows[-1])
                pd.DataFrame(rows).to_csv(csv, index=False)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> str:
    """Markdown tables of ``levers.csv`` rows.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows as written by :func:`run`.

    Returns
    -------
    str
        One table per data set: levers × (mean validation per-protein r, its difference to ``default``
        on each seed, mean and per-seed test per-protein r, test per-cell r, test MSE, fit time).
    """
    lines = [
        "Mean over seeds of the change against `default`: validation / test per-protein r.",
        "",
        "| lever | " + " | ".join(df["dataset"].unique()) + " |",
        "|---|" + "---|" * df["dataset"].nunique(),
    ]
    for lever in df["lever"].unique():
        if lever == "default":
            continue
        cells = []
        for name in df["dataset"].unique():
            sub = df[df["dataset"] == name]
            base = sub[sub["lever"] == "default"].set_index("seed")
            m = sub[sub["lever"] == lever].set_index("seed")
            seeds = m.index.intersection(base.index)
            if len(seeds) == 0:
                cells.append("–")
                continue
            dv = (m.loc[seeds, "val_pearson_protein"] - base.loc[seeds, "val_pearson_protein"]).mean()
            dt = (m.loc[seeds, "test_pearson_protein"] - base.loc[seeds, "test_pearson_protein"]).mean()
            cells.append(f"{dv:+.3f} / {dt:+.3f}" + ("" if len(seeds) == base.shape[0] else f" ({len(seeds)} seeds)"))
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, sub in df.groupby("dataset", sort=False):
        seeds = sorted(sub["seed"].unique())
        base = sub[sub["lever"] == "default"].set_index("seed")
        lines += [f"### {name}", ""]
        header = ["lever", "val per-protein r", "Δ val vs default (each seed)", "test per-protein r"]
        header += [f"test seed {s}" for s in seeds]
        header += ["test per-cell r", "test MSE", "fit (s)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for lever, m in sub.groupby("lever", sort=False):
            by = m.set_index("seed")
            deltas = [
                f"{by.loc[s, 'val_pearson_protein'] - base.loc[s, 'val_pearson_protein']:+.3f}"
                if s in by.index and s in base.index
                else "–"
                for s in seeds
            ]
            row = [
                lever,
                f"{m['val_pearson_protein'].mean():.3f}",
                " / ".join(deltas),
                f"{m['test_pearson_protein'].mean():.3f}",
            ]
            row += [f"{by.loc[s, 'test_pearson_protein']:.3f}" if s in by.index else "–" for s in seeds]
            row += [
                f"{m['test_pearson_cell'].mean():.3f}",
                f"{m['test_mse'].mean():.3f}",
                f"{m['fit_seconds'].mean():.1f}",
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the screen, write ``levers.csv`` and ``levers.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/levers")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--setting",
        default="in_distribution",
        choices=("in_distribution", "heldout_time"),
        help="heldout_time: the harness's held-out middle time point (sets without one are skipped)",
    )
    parser.add_argument("--data", default=",".join(DATA))
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--references", default=",".join(REFERENCES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding the real data sets' folders")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the preset's value (500)")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summarise_only:
        df = pd.read_csv(Path(args.out) / "levers.csv")
    else:
        df = run(args)
    (Path(args.out) / "levers.md").write_text(summarise(df))


if __name__ == "__main__":
    main()
