"""Covariate probe on the basal latent where the covariate is a pure nuisance (planted batches).

``synthetic_cite(n_batches=3)`` plants batches that scale library sizes and shift genes but do not
change the cell-state proportions, so a probe on the true cell states reads the batch at chance; the
time points of the same data change those proportions (the legitimately visible case). For each seed,
the default model and the model without the disentangling phase (``disentangle_epochs=0``) are trained
with ``time_key="time"`` and ``batch_key="batch"``, and :func:`crossmodalnet.tl.covariate_probe`
(5-fold balanced accuracy) reads batch and time from the basal latent of the test cells, beside PCA of
the input and the one-hot cell states (the floor). ``--state-weight W`` adds a third model, the default
with the disentangling phase's cell-state term at weight ``W`` (``disentangle_kwargs={"state_weight": W}``;
the default has 10, so ``--state-weight 0`` adds the default without the term); ``--state-fit F`` sets how
that model's term compares distances (``"interval"``: the term's first form; alone, it adds the default with
that fit).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/nuisance_probe.py --out results/nuisance_probe --seeds 0,1,2
    OMP_NUM_THREADS=1 python benchmarks/nuisance_probe.py --out results/nuisance_probe_state --state-weight 0
    OMP_NUM_THREADS=1 python benchmarks/nuisance_probe.py --out results/nuisance_probe_interval --state-fit interval

Writes ``probe.csv`` (one row per seed) and prints the means.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def run_seed(seed: int, state_weight: float | None = None, state_fit: str | None = None) -> dict:
    """Probe accuracies (batch and time) of each embedding for one data/split/model seed.

    Parameters
    ----------
    seed
        Seed of the data, the split and the models.
    state_weight
        If given, also train the default with this ``disentangle_kwargs["state_weight"]`` (columns ``state_*``;
        0 is the default without the cell-state term).
    state_fit
        If given, the ``state_*`` model's ``disentangle_kwargs["state_fit"]`` (with the default's weight unless
        ``state_weight`` is given too).

    Returns
    -------
    One row: balanced accuracy of each embedding (``default``, ``no_phase``, ``state``, ``pca``, ``cell_states``)
    for ``batch`` and ``time``, and their chance levels.
    """
    import scanpy as sc
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    mdata = cmn.datasets.synthetic_cite(n_obs=1200, n_genes=500, n_proteins=20, n_batches=3, time_effect=3, rng=seed)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    row = {"seed": seed}
    models = [("default", {}), ("no_phase", {"disentangle_epochs": 0})]
    phase = {
        key: value for key, value in (("state_weight", state_weight), ("state_fit", state_fit)) if value is not None
    }
    if phase:
        models.append(("state", {"disentangle_kwargs": phase}))
    for name, train_kwargs in models:
        scvi.settings.seed = seed  # same initial weights for both models, and across processes
        model = CrossmodalNet(mdata)
        model.train(split_seed=seed, accelerator="cpu", enable_progress_bar=False, **train_kwargs)
        cmn.tl.basal_embedding(mdata, model)
        test = mdata[~mdata.obs_names.isin(model.training_cells)].copy()
        for key in ("batch", "time"):
            cmn.tl.covariate_probe(test, key=key, key_added="probe")
            row[f"{name}_{key}"] = test.uns["probe"]["balanced_accuracy"]
            row[f"chance_{key}"] = test.uns["probe"]["chance"]
    sc.pp.pca(test["rna"], n_comps=50)
    test.obsm["X_pca"] = test["rna"].obsm["X_pca"]
    test.obsm["X_states"] = pd.get_dummies(test.obs["cell_state"]).to_numpy(float)
    for emb, label in (("X_pca", "pca"), ("X_states", "cell_states")):
        for key in ("batch", "time"):
            cmn.tl.covariate_probe(test, key=key, obsm_key=emb, key_added="probe")
            row[f"{label}_{key}"] = test.uns["probe"]["balanced_accuracy"]
    return row


def main() -> None:
    """Parse arguments, run every seed, write ``probe.csv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/nuisance_probe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--state-weight", type=float, default=None, help="also train with this cell-state term weight (0: without it)"
    )
    parser.add_argument(
        "--state-fit", choices=["ratio", "interval"], default=None, help="also train with this cell-state term fit"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    rows = [run_seed(int(s), args.state_weight, args.state_fit) for s in args.seeds.split(",")]
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "probe.csv", index=False)
    with pd.option_context("display.width", 200):
        print(df.round(3).to_string(index=False))
        print(df.drop(columns="seed").mean().round(3).to_string())
    if np.any(df.filter(like="chance").nunique() > 1):
        print("note: chance differs between seeds")


if __name__ == "__main__":
    main()
