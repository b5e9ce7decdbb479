from __future__ import annotations

import numpy as np
import pytest

from crossmodalnet.model import holdout_split, stratified_split


def test_stratified_split_proportions_and_disjoint():
    groups = np.repeat([0, 1, 2], [400, 300, 300])
    tr, va, te = stratified_split(groups, train_size=0.8, validation_size=0.05, rng=0)
    assert len(tr) + len(va) + len(te) == 1000
    assert len(set(tr) | set(va) | set(te)) == 1000
    for part, frac in ((tr, 0.8), (va, 0.05), (te, 0.15)):
        counts = np.bincount(groups[part], minlength=3)
        np.testing.assert_allclose(counts / np.array([400, 300, 300]), frac, atol=0.01)


def test_stratified_split_reproducible_and_seeded():
    groups = np.repeat([0, 1], 100)
    a = stratified_split(groups, rng=3)
    b = stratified_split(groups, rng=3)
    c = stratified_split(groups, rng=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_holdout_split_keeps_group_out_of_training():
    groups = np.repeat([2, 3, 4], 100)
    tr, va, te = holdout_split(groups, 3, train_size=0.8, validation_size=0.05, rng=0)
    assert set(groups[te]) == {3}
    assert len(te) == 100
    assert 3 not in set(groups[tr]) | set(groups[va])
    assert len(va) == pytest.approx(200 * 0.05 / 0.85, abs=2)


def test_split_errors():
    groups = np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match="train_size"):
        stratified_split(groups, train_size=0)
    with pytest.raises(ValueError, match="at most 1"):
        stratified_split(groups, train_size=0.9, validation_size=0.2)
    with pytest.raises(ValueError, match="No cell belongs"):
        holdout_split(groups, 7)


def test_external_indexing_trains_on_exactly_that_split(trained_model):
    from crossmodalnet.model import CrossmodalNet

    mdata = trained_model.adata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    n = mdata.n_obs
    train, val, test = np.arange(0, n // 2), np.arange(n // 2, n // 2 + 20), np.arange(n // 2 + 20, n)
    bad = {
        "overlap": [train, np.r_[val, train[:3]], test],
        "must lie in": [train, val, np.r_[test, n]],
        "no training cells": [[], val, test],
        "2 or 3 arrays": [train],
        "integers": [train.astype(float), val, test],
    }
    for match, indices in bad.items():
        model = CrossmodalNet(mdata, n_latent=4)
        with pytest.raises(ValueError, match=match):
            model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": indices})
        assert model.split_ == {}
    model = CrossmodalNet(mdata, n_latent=4)
    model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": [train, val, test]})
    for mine, theirs in ((train, model.train_indices), (val, model.validation_indices), (test, model.test_indices)):
        np.testing.assert_array_equal(np.sort(theirs), mine)
    assert model.split_["kind"] == "external"
    with pytest.raises(ValueError, match="arguments of `train"):
        model.train(max_epochs=1, datasplitter_kwargs={"batch_size": 8})
