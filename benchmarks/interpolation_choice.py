"""Embedding vs prediction interpolation for a held-out time point, with the default model.

For every data set with at least three numeric time points, every interior time point is held out
in turn (the model never sees it), the default model is trained on the other time points, and the
held-out cells are predicted twice from the same model: with the interpolated time embedding
(``predict_protein(interpolation="embedding")``) and with the interpolated predictions
(``interpolation="prediction"``). Writes ``interpolation.csv`` and ``interpolation.md``::

    python benchmarks/interpolation_choice.py --out results/interpolation --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

SPECS = ("synthetic:D1", "programs:D1", "dyngen")


def main() -> None:
    """Parse arguments, run every data set, seed and interior time point, write the tables."""
    import scvi
    import torch

    from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein
    from crossmodalnet.benchmark._data import TRAIN_SIZE, VALIDATION_SIZE, load_dataset
    from crossmodalnet.model import CrossmodalNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/interpolation")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=",".join(SPECS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding dyngen_bifurcating_200/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.data.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            data = load_dataset(spec, seed=seed, data_dir=args.data_dir)
            for held in data.time_categories[1:-1]:
                mdata = data.to_mudata()
                scvi.settings.seed = seed
                CrossmodalNet.setup_mudata(mdata, time_key="time")
                model = CrossmodalNet(mdata)
                model.train(
                    split="holdout_time",
                    holdout_time=held,
                    train_size=TRAIN_SIZE,
                    validation_size=VALIDATION_SIZE,
                    split_seed=seed,
                    accelerator="cpu",
                    enable_progress_bar=False,
                    enable_model_summary=False,
                )
                test = np.asarray(model.test_indices)
                true = data.Y[test].astype(np.float64)
                for how in ("embedding", "prediction"):
                    pred = model.predict_protein(interpolation=how).to_numpy()[test].astype(np.float64)
                    rows.append(
                        {
                            "dataset": data.name,
                            "seed": seed,
                            "held_out": held,
                            "interpolation": how,
                            "pearson_protein": float(np.nanmean(pearson_per_protein(pred, true))),
                            "pearson_cell": float(np.nanmean(pearson_per_cell(pred, true))),
                            "mse": float(np.mean((pred - true) ** 2)),
                            "best_epoch": model.split_.get("best_epoch"),
                        }
                    )
                    logging.info("%s", rows[-1])
                pd.DataFrame(rows).to_csv(out / "interpolation.csv", index=False)
    df = pd.DataFrame(rows)
    table = df.groupby(["dataset", "held_out", "interpolation"], sort=False)[
        ["pearson_protein", "pearson_cell", "mse"]
    ].mean()
    lines = ["| data set | held out | interpolation | per-protein r | per-cell r | MSE |", "|---|---|---|---|---|---|"]
    for (name, held, how), r in table.iterrows():
        lines.append(f"| {name} | {held} | {how} | {r.pearson_protein:.4f} | {r.pearson_cell:.4f} | {r.mse:.4f} |")
    (out / "interpolation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
