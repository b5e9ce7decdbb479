"""Time probe on the basal latent of a larger generated set, by length of the disentangling phase.

The basal-state tables (``benchmarks/interpretability.py --table basal``) use 200 to 1,200 cells. This script
checks the phase where each epoch has many mini-batches: it trains the default model on a benchmark size of
``synthetic_cite`` (drivers structure, the harness's in-distribution split) with ``disentangle_epochs`` 0, 25
(the default) and 50, and probes the time point from the basal latent of the test cells with
:func:`crossmodalnet.tl.covariate_probe` (5-fold balanced accuracy). The floor is the same probe on the
planted cell states alone (time changes their mix). The planted states are also scored on the basal latent of
all cells, beside 50 principal components of the registered RNA: 15-NN accuracy (5-fold) and the cell-type ASW
(silhouette rescaled to ``(s + 1) / 2``, the definition of scib-metrics' ``silhouette_label`` used in the
basal-state tables, computed with scikit-learn so that the script needs no benchmark extra). ``--state-weight W`` sets the phase's cell-state term
(``disentangle_kwargs={"state_weight": W}``; without it, the default preset's) and ``--state-fit F`` how it
compares distances (``"ratio"``, the default, or ``"interval"``, the term's first form)::

    python benchmarks/phase_probe.py --out results/phase_probe --size D2 --seeds 0
    python benchmarks/phase_probe.py --out results/phase_probe_no_term --size D2 --seeds 0 --epochs 25 --state-weight 0
    python benchmarks/phase_probe.py --out results/phase_probe_interval --size D2 --seeds 0 --epochs 25 --state-fit interval

writes ``phase_probe.csv``: one row per seed and phase length with the probe, chance, the cell-state floor,
the phase's disentangling term (first, lowest and last epoch) and its cell-state term's weight and fit, the cell-state
kNN and ASW of the basal latent and of PCA, and test per-protein Pearson.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _probe(embedding: np.ndarray, time: np.ndarray) -> tuple[float, float]:
    import anndata as ad

    import crossmodalnet as cmn

    adata = ad.AnnData(np.zeros((len(time), 1), dtype=np.float32))
    adata.obs["time"] = time
    adata.obsm["X"] = embedding
    cmn.tl.covariate_probe(adata, key="time", obsm_key="X", key_added="probe")
    return float(adata.uns["probe"]["balanced_accuracy"]), float(adata.uns["probe"]["chance"])


def _cell_state_scores(x: np.ndarray, states: np.ndarray) -> tuple[float, float]:
    """15-NN accuracy (5-fold) and the cell-type ASW ``(silhouette + 1) / 2`` of the planted states on ``x``."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    knn = cross_val_score(KNeighborsClassifier(n_neighbors=15), x, states, cv=folds).mean()
    return float(knn), float((silhouette_score(x, states) + 1) / 2)


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Train and probe every seed and phase length; write and return the table.

    Parameters
    ----------
    args
        Parsed arguments (``out``, ``size``, ``seeds``, ``epochs``, ``max_epochs``, optionally ``state_weight`` and
        ``state_fit``).

    Returns
    -------
    pandas.DataFrame
        One row per seed and phase length.
    """
    import scanpy as sc
    import scvi
    import torch

    import crossmodalnet as cmn
    from crossmodalnet._metrics import pearson_per_protein
    from crossmodalnet.benchmark import load_dataset, make_split
    from crossmodalnet.benchmark._data import SYNTHETIC_SIZES, TRAIN_SIZE, VALIDATION_SIZE
    from crossmodalnet.model import CrossmodalNet

    torch.set_num_threads(1)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = load_dataset(f"synthetic:{args.size}", seed=seed)
        _, _, test = make_split(data, "in_distribution", seed=seed)
        test = np.sort(np.asarray(test))
        n_obs, n_genes, n_proteins = SYNTHETIC_SIZES[args.size]
        # the same generator call as the harness, for the planted cell states it does not keep
        raw = cmn.datasets.synthetic_cite(
            n_obs=n_obs, n_genes=n_genes, n_proteins=n_proteins, n_time_points=3, rng=seed
        )
        time = raw.obs["time"].astype(str).to_numpy()
        if not np.array_equal(time, data.to_mudata().obs["time"].astype(str).to_numpy()):
            raise RuntimeError("the regenerated data differ from the harness's")
        labels = raw.obs["cell_state"].astype(str).to_numpy()
        states = pd.get_dummies(labels).to_numpy(float)
        floor, _ = _probe(states[test], time[test])
        pca = sc.pp.pca(np.asarray(data.X, dtype=np.float32), n_comps=50)  # the registered RNA of to_mudata()
        pca_knn, pca_asw = _cell_state_scores(pca, labels)
        given = {key: getattr(args, key, None) for key in ("state_weight", "state_fit")}
        phase_kwargs = {key: value for key, value in given.items() if value is not None} or None
        for epochs in [int(e) for e in args.epochs.split(",")]:
            mdata = data.to_mudata()
            scvi.settings.seed = seed
            torch.manual_seed(seed)
            CrossmodalNet.setup_mudata(mdata, time_key="time")
            model = CrossmodalNet(mdata)
            model.train(
                args.max_epochs,
                split="random",
                train_size=TRAIN_SIZE,
                validation_size=VALIDATION_SIZE,
                split_seed=seed,
                disentangle_epochs=epochs,
                disentangle_kwargs=phase_kwargs,
                accelerator="cpu",
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            if not np.array_equal(np.sort(np.asarray(model.test_indices)), test):
                raise RuntimeError("the model drew a different split than the harness")
            z = model.get_latent_representation(mdata)
            probe, chance = _probe(z[test], time[test])
            knn, asw = _cell_state_scores(z, labels)
            pred = model.predict_protein(mdata).to_numpy()[test]
            truth = np.asarray(data.Y)[test]
            r = np.nanmean(pearson_per_protein(pred, truth))  # constant proteins are NaN and left out
            record = model.split_.get("disentangle", {})
            terms = record.get("term_per_epoch", [])
            rows.append(
                {
                    "size": args.size,
                    "seed": seed,
                    "disentangle_epochs": epochs,
                    "probe_test": probe,
                    "chance": chance,
                    "cell_state_floor": floor,
                    "term_first": terms[0] if terms else np.nan,
                    "term_min": min(terms) if terms else np.nan,
                    "term_last": terms[-1] if terms else np.nan,
                    "state_weight": record.get("state_weight", np.nan) if terms else np.nan,
                    "state_fit": record.get("state_fit") if terms else None,
                    "celltype_knn": knn,
                    "celltype_asw": asw,
                    "pca_knn": pca_knn,
                    "pca_asw": pca_asw,
                    "test_pearson_protein": float(r),
                }
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "phase_probe.csv", index=False)
    return df


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/phase_probe")
    parser.add_argument("--size", default="D2")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", default="0,25,50")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--state-weight", type=float, default=None, help="weight of the phase's cell-state term (default: the preset's)"
    )
    parser.add_argument(
        "--state-fit", choices=["ratio", "interval"], default=None, help="how the cell-state term compares distances"
    )
    print(run(parser.parse_args()).to_string(index=False))


if __name__ == "__main__":
    main()
