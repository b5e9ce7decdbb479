from __future__ import annotations

import numpy as np
import pytest
from anndata.tests.helpers import assert_equal


@pytest.fixture
def mdata(norm_mdata):
    """A fresh copy of the normalised test data, free to mutate."""
    return norm_mdata.copy()


@pytest.fixture(scope="session")
def gene_sets(norm_mdata):
    """Small gene sets over the synthetic genes: one holds the planted drivers of the first protein."""
    genes = np.asarray(norm_mdata["rna"].var_names)
    drivers = norm_mdata.uns["cmn_synthetic"]["driver_genes"]
    protein = next(iter(drivers))
    rng = np.random.default_rng(0)
    sets = {f"random_{k}": list(rng.choice(genes, size=8, replace=False)) for k in range(4)}
    sets["drivers"] = list(drivers[protein]) + list(rng.choice(genes, size=3, replace=False))
    return sets


@pytest.fixture
def assert_unchanged():
    """Assert that a MuData equals an earlier copy of itself: modalities, obs, obsm and uns keys."""

    def check(before, after):
        assert list(before.mod) == list(after.mod)
        for key in before.mod:
            assert_equal(before[key], after[key])
        assert before.obs.equals(after.obs)
        assert set(before.obsm) == set(after.obsm)
        assert set(before.uns) == set(after.uns)

    return check


@pytest.fixture(scope="module")
def covariate_model():
    """The default preset (linear path on) with time and batch covariates, trained for one epoch on the CPU."""
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    mdata = cmn.datasets.synthetic_cite(n_obs=150, n_genes=30, n_proteins=5, n_time_points=3, n_batches=2, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    return model
