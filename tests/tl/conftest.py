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
