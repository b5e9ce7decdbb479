"""Test accuracy of the default model and of LightGBM on a large generated reference, one seed per run.

Usage::

    python benchmarks/large_reference_accuracy.py --reference ref200k.h5mu --n-obs 200000 --n-genes 20000 \
        --seed 0 --method default
    python benchmarks/large_reference_accuracy.py --reference ref200k.h5mu --seed 0 --method lightgbm
    python benchmarks/large_reference_accuracy.py --reference ref200k.h5mu --seed 0 --method default \
        --model-kwargs '{"n_input_features": 256}' --label screen256

The reference is the ``.h5mu`` of :func:`scale_train_size.write_reference` (5 % non-zeros, 50 proteins, 3 time
points, generator seed 0), written first if the file does not exist, then read into memory. The seed sets the
model's own split (80 / 5 / 15 % of the cells) and its weights; disentangling is off (it changes the basal latent,
not the accuracy it is kept at). ``--method default`` trains ``CrossmodalNet(mdata, **model_kwargs)`` with the
default preset to its own stop. ``--method lightgbm`` fits the benchmark harness's
:class:`~crossmodalnet.benchmark.LightGBMMethod` (one booster per protein, early stopping on the validation
cells) on the same seed's split, on the genes of the default's linear path (the supervised screen's 2,048 on a
large reference; LightGBM on all 20,000 is out of reach on this box) plus one-hot time, for the proteins
``--proteins`` (default every fifth: 0, 5, ..., 45; LightGBM on all 50 takes hours). ``--method ridge`` fits
ridge regression on every gene with the linear path's estimator (:func:`ridge_all_genes`: genes and proteins
centred per time point, the penalty from its relative grid chosen by validation mean squared error) on the same
split, for all 50 proteins. ``--model-kwargs '{"preset": "paper"}'`` trains the paper preset. Each run appends
one row to ``--out``: test per-protein r on every protein and on those of ``--proteins``, per-cell r, epochs, fit
seconds, commit, machine and the command (for ridge, ``model_kwargs`` holds the chosen relative penalty).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale_train_size import _commit, _machine, write_reference

FIELDS = (
    "commit",
    "date",
    "machine",
    "reference",
    "n_obs",
    "n_genes",
    "seed",
    "method",
    "label",
    "model_kwargs",
    "network_input",
    "test_cells",
    "proteins",
    "test_r_protein",
    "test_r_protein_subset",
    "test_r_cell",
    "epochs",
    "best_epoch",
    "fit_s",
    "command",
)


def _model(mdata, seed: int, model_kwargs: dict, max_epochs: int | None, train_kwargs: dict):
    import scvi
    import torch

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = seed
    torch.manual_seed(seed)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, **model_kwargs)
    start = time.perf_counter()
    model.train(
        max_epochs,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        disentangle_epochs=0,
        **train_kwargs,
    )
    return model, time.perf_counter() - start


def ridge_all_genes(X, Y, t, n_time, train, validation, *, chunk: int = 2048, search: str = "refine"):
    """Ridge regression on every column of ``X``, per time point centred, penalty chosen on validation cells.

    The linear path's estimator (:func:`crossmodalnet.model._linear.fit_ridge_by_time`) without its SVD, for
    more genes than an eigendecomposition fits in this box's time: the centred gram ``Xᶜᵀ Xᶜ`` is accumulated
    over dense row chunks (``O(genes²)`` memory beside ``X``) and each candidate penalty is one Cholesky
    solve. Penalties are the linear path's relative grid times ``trace(gram) / genes`` (its mean squared
    singular value when the centred genes have full column rank, as with more training cells than genes).
    ``search="full"`` solves the whole grid (29 penalties); ``"refine"`` solves every fourth penalty (a decade
    apart), then the two half-decade and the two quarter-decade neighbours of the best so far: 12 solves, the
    full grid's choice whenever the validation error has one minimum along the grid.

    Parameters
    ----------
    X
        Cells × genes, sparse or dense, indexable by sorted rows.
    Y
        Cells × proteins, float64, every value measured.
    t
        Time code of every cell.
    n_time
        Number of time codes; each must have training cells.
    train, validation
        Row positions of the training and validation cells.
    chunk
        Rows densified at once.
    search
        ``"refine"`` or ``"full"``.

    Returns
    -------
    ``predict(rows)`` (rows of ``X`` → cells × proteins), the chosen relative penalty and the number of solves.
    """
    from scipy import linalg, sparse

    from crossmodalnet.model._linear import LINEAR_ALPHA_GRID

    if search not in ("refine", "full"):
        raise ValueError(f"`search` must be 'refine' or 'full', got {search!r}.")
    train, validation = np.sort(train), np.sort(validation)
    n_genes = X.shape[1]

    def dense(rows):
        block = X[rows]
        return block.toarray() if sparse.issparse(block) else np.asarray(block, dtype=np.float64)

    counts = np.bincount(t[train], minlength=n_time)
    if (counts == 0).any():
        raise ValueError(f"Time codes {np.flatnonzero(counts == 0).tolist()} have no training cells.")
    mean_x = np.zeros((n_time, n_genes))
    for start in range(0, train.size, chunk):
        rows = train[start : start + chunk]
        block = dense(rows)
        for c in range(n_time):
            mean_x[c] += block[t[rows] == c].sum(axis=0)
    mean_x /= counts[:, None]
    mean_y = np.stack([Y[train[t[train] == c]].mean(axis=0) for c in range(n_time)])
    gram = np.zeros((n_genes, n_genes), order="F")
    cross = np.zeros((n_genes, Y.shape[1]))
    for start in range(0, train.size, chunk):
        rows = train[start : start + chunk]
        block = dense(rows).astype(np.float64) - mean_x[t[rows]]
        gram = linalg.blas.dsyrk(1.0, block.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=True)
        cross += block.T @ (Y[rows] - mean_y[t[rows]])
    scale = float(np.trace(gram)) / n_genes
    grid = np.asarray(LINEAR_ALPHA_GRID, dtype=np.float64)
    buffer = np.empty_like(gram, order="F")
    errors: dict[int, float] = {}
    weights: dict[int, np.ndarray] = {}

    def solve(i: int) -> None:
        if i not in errors:
            buffer[...] = gram
            buffer.flat[:: n_genes + 1] += grid[i] * scale
            factor = linalg.cho_factor(buffer, lower=False, overwrite_a=True, check_finite=False)
            W = linalg.cho_solve(factor, cross, check_finite=False)
            intercept = mean_y - mean_x @ W
            sse = 0.0
            for start in range(0, validation.size, chunk):
                rows = validation[start : start + chunk]
                sse += float(np.sum((X[rows] @ W + intercept[t[rows]] - Y[rows]) ** 2))
            errors[i], weights[i] = sse, W

    for i in range(0, grid.size, 1 if search == "full" else 4):
        solve(i)
    if search == "refine":
        for step in (2, 1):
            best = min(errors, key=errors.get)
            for i in (best - step, best + step):
                if 0 <= i < grid.size:
                    solve(i)
    best = min(errors, key=errors.get)
    W = weights[best]
    intercept = mean_y - mean_x @ W

    def predict(rows: np.ndarray) -> np.ndarray:
        return np.asarray(X[rows] @ W) + intercept[t[rows]]

    return predict, float(grid[best]), len(errors)


def run(args: argparse.Namespace) -> dict:
    """Fit one method on one seed; return its CSV row."""
    import mudata as md
    import torch

    from crossmodalnet._constants import REGISTRY_KEYS
    from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein

    torch.set_num_threads(args.threads)
    path = Path(args.reference)
    if not path.exists():
        write_reference(path, args.n_obs, args.n_genes, 0.05, 50, 3, seed=0)
    mdata = md.read_h5mu(path)
    subset = np.asarray(json.loads(args.proteins), dtype=np.int64)
    model_kwargs = json.loads(args.model_kwargs)
    # LightGBM and ridge need the default's split (and LightGBM its linear-path genes) only: one epoch fits them
    max_epochs = args.max_epochs if args.method == "default" else 1
    model, fit_s = _model(mdata, args.seed, model_kwargs, max_epochs, json.loads(args.train_kwargs))
    test = np.sort(np.asarray(model.test_indices, dtype=np.int64))
    true = model._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, test).astype(np.float64)
    row = {
        "reference": path.name,
        "n_obs": mdata.n_obs,
        "n_genes": mdata["rna"].n_vars,
        "seed": args.seed,
        "method": args.method,
        "label": args.label or args.method,
        "model_kwargs": args.model_kwargs if args.method == "default" else "",
        "test_cells": int(test.size),
        "proteins": args.proteins,
    }
    if args.method == "default":
        pred = model.predict_protein().to_numpy(np.float64)[test]
        history = model.history_.get("pearson_protein_validation")
        reduction = model.module.input_reduction
        row.update(
            network_input="all genes" if reduction is None else f"{reduction} {model.module.n_features}",
            test_r_cell=round(float(np.nanmean(pearson_per_cell(pred, true))), 4),
            epochs=0 if history is None else len(history),
            best_epoch=model.split_.get("best_epoch"),
        )
    elif args.method == "ridge":
        tr, va = (np.asarray(i, dtype=np.int64) for i in (model.train_indices, model.validation_indices))
        X = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        t = model.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1).astype(np.int64)
        Y = model._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, np.arange(mdata.n_obs)).astype(np.float64)
        n_time = int(t.max()) + 1
        del model
        start = time.perf_counter()
        predict, alpha, solves = ridge_all_genes(X, Y, t, n_time, tr, va)
        fit_s = time.perf_counter() - start
        pred = predict(test)
        row.update(
            model_kwargs=json.dumps({"alpha_relative": alpha, "solves": solves}),
            network_input=f"all {X.shape[1]} genes",
            test_r_cell=round(float(np.nanmean(pearson_per_cell(pred, true))), 4),
        )
    else:
        from crossmodalnet.benchmark import make_method

        genes = np.flatnonzero(model.module.linear_weight.abs().sum(1).numpy() > 0)
        tr, va = (np.sort(np.asarray(i, dtype=np.int64)) for i in (model.train_indices, model.validation_indices))
        X = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        t = model.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1)
        Y = model._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, np.arange(mdata.n_obs))[:, subset].astype(np.float64)
        Xg = X[:, genes].toarray().astype(np.float32)
        del model, mdata
        method = make_method("lightgbm", seed=args.seed, threads=args.threads)
        start = time.perf_counter()
        method.fit(Xg[tr], Y[tr], Xg[va], Y[va], t[tr], t[va])
        fit_s = time.perf_counter() - start
        pred = np.full(true.shape, np.nan)
        pred[:, subset] = method.predict(Xg[test], t[test])
        row["network_input"] = f"{genes.size} linear-path genes"
    r = pearson_per_protein(pred, true)
    if args.method in ("default", "ridge"):
        row["test_r_protein"] = round(float(np.nanmean(r)), 4)
    row["test_r_protein_subset"] = round(float(np.nanmean(r[subset])), 4)
    row["fit_s"] = round(fit_s, 1)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help=".h5mu of scale_train_size.write_reference")
    parser.add_argument("--n-obs", type=int, default=200000, help="cells, when the reference is written first")
    parser.add_argument("--n-genes", type=int, default=20000, help="genes, when the reference is written first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("default", "lightgbm", "ridge"), default="default")
    parser.add_argument("--model-kwargs", default="{}", help="JSON of CrossmodalNet arguments (--method default)")
    parser.add_argument("--train-kwargs", default="{}", help="JSON of CrossmodalNet.train arguments (--method default)")
    parser.add_argument("--label", default="", help="name of the configuration in the CSV")
    parser.add_argument("--proteins", default=json.dumps(list(range(0, 50, 5))), help="JSON list of protein positions")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap on the default's epochs (a smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "large_reference_accuracy.csv"))
    args = parser.parse_args(argv)
    row = {
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": _machine(),
        **run(args),
        "command": "python benchmarks/large_reference_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    new = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in FIELDS})
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
