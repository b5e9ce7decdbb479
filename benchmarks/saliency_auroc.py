"""How well does saliency recover the planted driver genes of each protein? (issue #3)

Trains CrossmodalNet on ``cmn.datasets.synthetic_cite`` and scores, for every protein, how well
the saliency ranking separates its planted driver genes from all other genes (AUROC of the
absolute score, 0.5 = chance), for every method of ``cmn.tl.saliency`` (``--methods``; integrated
gradients from both baselines), each aggregated as a signed sum and as a sum of magnitudes
(``--aggregates``). Attributions relative to the mean cell are only scored with the sum of magnitudes.
Extra model and training arguments: ``--model-kwargs`` and ``--train-kwargs`` (JSON).

Usage (defaults are the issue's setting: 2000 cells × 2000 genes × 50 proteins × 3 time points)::

    PYTHONPATH=src python benchmarks/saliency_auroc.py
    PYTHONPATH=src python benchmarks/saliency_auroc.py --n-obs 1500 --n-genes 300 --n-proteins 12 --n-latent 128
    PYTHONPATH=src python benchmarks/saliency_auroc.py --small-data-recipe --max-epochs 500
    PYTHONPATH=src python benchmarks/saliency_auroc.py --methods gradient gradient_x_sd --model-kwargs '{"n_latent": 64}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import pandas as pd
from sklearn.metrics import roc_auc_score

import crossmodalnet as cmn

logger = logging.getLogger("saliency_auroc")


def driver_auroc(scores: pd.DataFrame, drivers: dict) -> pd.Series:
    """AUROC of |score| for the planted drivers of each protein against all other genes."""
    out = {}
    for protein in scores.columns:
        truth = scores.index.isin(list(drivers[protein]))
        out[protein] = roc_auc_score(truth, scores[protein].abs().to_numpy())
    return pd.Series(out, name="auroc")


def run(args: argparse.Namespace) -> pd.DataFrame:
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = args.seed
    mdata = cmn.datasets.synthetic_cite(
        n_obs=args.n_obs, n_genes=args.n_genes, n_proteins=args.n_proteins, n_time_points=3, rng=args.seed
    )
    truth = mdata.uns["cmn_synthetic"]
    drivers, kinds = truth["driver_genes"], pd.Series(truth["driver_kind"], index=mdata["prot"].var_names)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model_kwargs = {
        "preset": "paper",
        "n_latent": args.n_latent,
        "standardize_protein": args.small_data_recipe,
        **args.model_kwargs,
    }
    model = CrossmodalNet(mdata, **model_kwargs)
    recipe = {"input_group_lasso": 1e-4, "early_stopping_patience": 50} if args.small_data_recipe else {}
    recipe |= args.train_kwargs
    t0 = time.perf_counter()
    model.train(max_epochs=args.max_epochs, accelerator="cpu", enable_progress_bar=False, **recipe)
    train_s = time.perf_counter() - t0
    cmn.tl.predict_protein(mdata, model)
    metrics = mdata.uns["cmn_protein"]["metrics"]
    print(
        f"trained {len(model.history['loss_train'])} epochs "
        f"in {train_s:.0f} s; test Pearson per protein {metrics['pearson_protein']:.3f}, "
        f"per cell {metrics['pearson_cell']:.3f}"
    )
    rows = []
    variants = []
    for method in args.methods:
        baselines = ("zeros", "mean") if method in ("gradient_x_input", "integrated_gradients") else (None,)
        variants += [(method, b, a) for b in baselines for a in args.aggregates if not (b == "mean" and a == "sum")]
    for method, baseline, aggregate in variants:
        t0 = time.perf_counter()
        kw = {"n_steps": args.n_steps} if method == "integrated_gradients" else {}
        cmn.tl.saliency(mdata, model, method=method, aggregate=aggregate, baseline=baseline, **kw)
        seconds = time.perf_counter() - t0
        auroc = driver_auroc(mdata["rna"].varm["cmn_saliency"], drivers)
        row = {"method": method, "baseline": baseline or "", "aggregate": aggregate}
        row |= {"mean_auroc": auroc.mean(), "sd_auroc": auroc.std(), "min_auroc": auroc.min()}
        row |= {f"auroc_{k}": auroc[kinds[auroc.index] == k].mean() for k in sorted(set(kinds[auroc.index]))}
        row["seconds"] = seconds
        rows.append(row)
        print(
            f"{method:>20} {baseline or '':>5} {aggregate:>7}: mean AUROC {row['mean_auroc']:.3f} ({seconds:.0f} s)",
            flush=True,
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=2000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-proteins", type=int, default=50)
    parser.add_argument("--n-latent", type=int, default=512)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--n-steps", type=int, default=50, help="integrated-gradients steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad"],
    )
    parser.add_argument("--aggregates", nargs="+", default=["sum", "abs_sum"])
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON: more CrossmodalNet(...) arguments")
    parser.add_argument("--train-kwargs", type=json.loads, default={}, help="JSON: more model.train(...) arguments")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--small-data-recipe",
        action="store_true",
        help="standardize_protein=True, input_group_lasso=1e-4, early-stopping patience 50",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cmn.settings.verbosity = "warning"
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    table = run(args)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
