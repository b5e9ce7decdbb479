"""Does a second ``train()`` keep a trained model as good as it was? (issue #14, item 1)

On ``cmn.datasets.bmmc_cite`` (600 real BMMC cells × 1,000 genes × 134 proteins; the donor as the
covariate), for each seed: train to early stopping (``max_epochs=300``, patience 10, ``n_latent=128``)
and score the test cells; then (a) call ``train(max_epochs=30)`` again on the same model, and (b) save
the first model, load it with its data and call ``train(max_epochs=30)``. Prints per-protein and
per-cell Pearson on the same test cells after each step.

Usage::

    PYTHONPATH=src python benchmarks/continued_training.py 0 1 2
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings

import numpy as np
import scvi
import torch

import crossmodalnet as cmn
from crossmodalnet._metrics import prediction_metrics
from crossmodalnet.model import CrossmodalNet

TRAIN = {"batch_size": 128, "accelerator": "cpu", "enable_progress_bar": False, "logger": False}


def _test_r(model: CrossmodalNet, mdata, idx: np.ndarray) -> tuple[float, float]:
    pred = model.predict_protein(mdata).to_numpy()[idx]
    true = mdata["prot"].X[idx]
    true = true.toarray() if hasattr(true, "toarray") else np.asarray(true)
    m = prediction_metrics(pred, true)
    return m["pearson_protein"], m["pearson_cell"]


def main(seeds: list[int]) -> None:
    """Print test Pearson before and after continued training for each seed."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cmn.settings.verbosity = "warning"
    for seed in seeds:
        mdata = cmn.datasets.bmmc_cite()
        scvi.settings.seed = seed
        CrossmodalNet.setup_mudata(mdata, time_key="batch")
        model = CrossmodalNet(mdata, n_latent=128)
        model.train(max_epochs=300, split_seed=seed, **TRAIN)
        idx = np.asarray(model.test_indices)
        first = _test_r(model, mdata, idx)
        with tempfile.TemporaryDirectory() as d:
            model.save(f"{d}/m")
            model.train(max_epochs=30, split_seed=seed, **TRAIN)
            again = _test_r(model, mdata, idx)
            loaded = CrossmodalNet.load(f"{d}/m", mdata)
            loaded.train(max_epochs=30, split_seed=seed, **TRAIN)
            after_load = _test_r(loaded, mdata, idx)
        print(
            f"seed {seed}: test Pearson per protein/per cell: first {first[0]:.3f}/{first[1]:.3f}, "
            f"second train {again[0]:.3f}/{again[1]:.3f}, load + train {after_load[0]:.3f}/{after_load[1]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0])
