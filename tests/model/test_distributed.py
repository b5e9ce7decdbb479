"""Accelerators and data-parallel training through Lightning (CPU DDP here; CUDA where present)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scvi

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet

_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import scvi
    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    out = sys.argv[1]
    scvi.settings.seed = 0
    mdata = cmn.datasets.synthetic_cite(n_obs=240, n_genes=40, n_proteins=6, n_time_points=3, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=8)
    model.train(max_epochs=3, batch_size=32, accelerator="cpu", devices=2, strategy="ddp", enable_progress_bar=False)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    state = {k: v.detach().cpu().double().reshape(-1).tolist() for k, v in model.module.state_dict().items()}
    history = sorted(model.history) if rank == 0 else []
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"state": state, "history": history, "split": model.split_}, fh)
    """
)


class _StopAtSplitter(Exception):
    pass


def test_ddp_strategy_uses_distributed_sampler(norm_mdata):
    """`train()` asks the data splitter for a distributed sampler exactly when the strategy is DDP."""
    from lightning.pytorch.strategies import DDPStrategy

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    seen = []

    def splitter(*args, **kwargs):
        seen.append(kwargs["distributed_sampler"])
        raise _StopAtSplitter

    for strategy in ("ddp", "ddp_spawn", DDPStrategy(), None, "auto"):
        model = CrossmodalNet(mdata, n_latent=4)
        model._data_splitter_cls = splitter
        kwargs = {} if strategy is None else {"strategy": strategy}
        with pytest.raises(_StopAtSplitter):
            model.train(max_epochs=1, **kwargs)
    assert seen == [True, True, True, False, False]


@pytest.mark.slow
def test_cpu_ddp_keeps_replicas_identical(tmp_path):
    """Two CPU processes (gloo) train on different cells; averaged gradients keep them identical.

    GradNorm takes per-task gradients with ``torch.autograd.grad``, which bypasses DDP's hooks, so
    the plan averages gradients itself; without that the two replicas diverge (checked by hand:
    35 of the module's tensors differed).
    """
    script = tmp_path / "train_ddp.py"
    script.write_text(_DDP_SCRIPT)
    src = str(Path(cmn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        np.testing.assert_array_equal(np.asarray(r0["state"][key]), np.asarray(r1["state"][key]), err_msg=key)
    # training happened: GradNorm's first losses were recorded, the history exists on rank 0
    assert all(v > 0 for v in r0["state"]["initial_losses"])
    assert "pearson_protein_validation" in r0["history"]
    assert r0["split"]["n_train"] == 192


@pytest.mark.gpu
def test_gpu_training_and_prediction_match_cpu_shapes(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(max_epochs=3, accelerator="gpu", devices=1, batch_size=64, enable_progress_bar=False)
    assert model.device.type == "cuda"
    pred = model.predict_protein()
    assert pred.shape == (mdata.n_obs, model.n_proteins)
    assert np.isfinite(pred.to_numpy()).all()
    sal = model.get_saliency(proteins=list(model.protein_names[:2]))
    assert np.isfinite(sal.to_numpy()).all()
    model.to_device("cpu")
    np.testing.assert_allclose(model.predict_protein().to_numpy(), pred.to_numpy(), rtol=1e-3, atol=1e-4)
