"""Closed-form fits (linear path, gene screen, uncertainty calibration) use measured proteins only.

NaN in the registered protein matrix means "not measured" (a reference whose panel lacked the
antibody). Each test here fails when an unmeasured value enters a fit: the fits of a protein must
equal fits on the cells that measured it, and must not move when cells that did not measure it change.
"""

from __future__ import annotations

import numpy as np
import pytest
from mudata import MuData

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._fitting import screen_ranking
from crossmodalnet.model._linear import (
    fit_ridge_from_statistics,
    measured_protein_groups,
    ridge_statistics,
)
from crossmodalnet.model._uncertainty import _MIN_CELLS_PER_PROTEIN, _N_NEIGHBOURS, UncertaintyMixin, calibration_scores

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
MISSING = [0, 1]  # proteins panel B lacks


def _panel_mdata(n_obs=240, n_genes=40, n_proteins=6):
    """Normalised synthetic CITE-seq whose odd cells (panel B) did not measure proteins ``MISSING``."""
    mdata = cmn.datasets.synthetic_cite(n_obs=n_obs, n_genes=n_genes, n_proteins=n_proteins, sparse=False, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    panel_b = np.arange(mdata.n_obs) % 2 == 1
    Y = np.asarray(mdata["prot"].X, dtype=np.float32).copy()
    Y[np.ix_(panel_b, MISSING)] = np.nan
    mdata["prot"].X = Y
    mdata.obs["panel"] = np.where(panel_b, "B", "A")
    return mdata, panel_b


def _split(n_obs, seed=0):
    perm = np.random.default_rng(seed).permutation(n_obs)
    return np.sort(perm[: int(0.7 * n_obs)]), np.sort(perm[int(0.7 * n_obs) :])


def _closed_form(mdata, train_idx, val_idx, **kwargs):
    """A default-preset model whose closed-form parts (scalings, screen, linear path) are fitted, untrained."""
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, **kwargs)
    model._fit_on_training_cells(train_idx, val_idx, seed=0)
    return model


def _subset(mdata, cells, proteins):
    """The cells ``cells`` (boolean) of ``mdata`` with only the proteins ``proteins``, as a new MuData."""
    rna = mdata["rna"][cells].copy()
    prot = mdata["prot"][cells][:, proteins].copy()
    sub = MuData({"rna": rna, "prot": prot})
    sub.obs["time"] = mdata.obs["time"].to_numpy()[cells]
    return sub


def _linear(model):
    return model.module.linear_weight.double().numpy(), model.module.linear_intercept.double().numpy()


def test_measured_protein_groups():
    measured = np.ones((6, 5), dtype=bool)
    assert [g.tolist() for g in measured_protein_groups(measured)] == [[0, 1, 2, 3, 4]]
    measured[::2, [1, 3]] = False
    measured[5, 4] = False
    assert [g.tolist() for g in measured_protein_groups(measured)] == [[0, 2], [1, 3], [4]]


def test_linear_path_of_each_panel_equals_a_fit_on_the_cells_that_measured_it():
    mdata, panel_b = _panel_mdata()
    train_idx, val_idx = _split(mdata.n_obs)
    model = _closed_form(mdata.copy(), train_idx, val_idx)
    W, b = _linear(model)
    assert np.isfinite(W).all()
    assert np.isfinite(b).all()
    groups = model.linear_path_genes_["groups"]
    assert [g["proteins"].tolist() for g in groups] == [MISSING, [2, 3, 4, 5]]
    assert groups[0]["n_cells"] == int((~panel_b[train_idx]).sum())
    assert groups[1]["n_cells"] == train_idx.size

    # proteins 0, 1: a model of panel A's cells and those proteins alone, with the same training cells
    cells = ~panel_b
    position = np.cumsum(cells) - 1
    sub = _closed_form(
        _subset(mdata, cells, MISSING),
        position[train_idx[cells[train_idx]]],
        position[val_idx[cells[val_idx]]],
    )
    W_sub, b_sub = _linear(sub)
    assert groups[0]["choice"] == sub.linear_path_genes_["choice"]
    np.testing.assert_allclose(W[:, MISSING], W_sub, atol=1e-6)
    np.testing.assert_allclose(b[:, MISSING], b_sub, atol=1e-6)

    # proteins 2-5, measured everywhere: a model of every cell and those proteins alone
    rest = _closed_form(_subset(mdata, np.ones(mdata.n_obs, bool), [2, 3, 4, 5]), train_idx, val_idx)
    W_rest, b_rest = _linear(rest)
    np.testing.assert_allclose(W[:, 2:], W_rest, atol=1e-6)
    np.testing.assert_allclose(b[:, 2:], b_rest, atol=1e-6)


def test_cells_that_measured_no_protein_are_left_out_of_the_linear_path():
    mdata, panel_b = _panel_mdata()
    Y = np.asarray(mdata["prot"].X).copy()
    Y[panel_b] = np.nan  # panel B measured nothing: one group, fitted on panel A's cells
    mdata["prot"].X = Y
    train_idx, val_idx = _split(mdata.n_obs)
    with pytest.warns(UserWarning, match="measured no protein"):
        model = _closed_form(mdata.copy(), train_idx, val_idx)
    (group,) = model.linear_path_genes_["groups"]
    assert group["n_cells"] == int((~panel_b[train_idx]).sum())
    assert model.linear_path_genes_["choice"] == group["choice"]
    position = np.cumsum(~panel_b) - 1
    sub = _closed_form(
        _subset(mdata, ~panel_b, list(range(Y.shape[1]))),
        position[train_idx[~panel_b[train_idx]]],
        position[val_idx[~panel_b[val_idx]]],
    )
    for got, expected in zip(_linear(model), _linear(sub), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cells_that_did_not_measure_a_protein_do_not_change_its_linear_path():
    mdata, panel_b = _panel_mdata()
    train_idx, val_idx = _split(mdata.n_obs)
    W, b = _linear(_closed_form(mdata.copy(), train_idx, val_idx))
    changed = mdata.copy()
    X = np.asarray(changed["rna"].X).copy()
    X[panel_b] = np.random.default_rng(1).permutation(X[panel_b])  # other RNA for the cells of panel B
    changed["rna"].X = X
    W2, b2 = _linear(_closed_form(changed, train_idx, val_idx))
    np.testing.assert_array_equal(W2[:, MISSING], W[:, MISSING])
    np.testing.assert_array_equal(b2[:, MISSING], b[:, MISSING])
    assert not np.allclose(W2[:, 2:], W[:, 2:])  # the proteins panel B measured do see the change


def test_screen_correlates_each_protein_over_the_cells_that_measured_it():
    mdata, panel_b = _panel_mdata()
    X = np.asarray(mdata["rna"].X, dtype=np.float64)
    Y = np.asarray(mdata["prot"].X, dtype=np.float64)
    rows = np.arange(mdata.n_obs)
    # one protein: the ranking over its measured cells, whatever the other cells' RNA
    np.testing.assert_array_equal(
        screen_ranking(X, Y[:, :1], rows), screen_ranking(X[~panel_b], Y[~panel_b, :1], rows[: (~panel_b).sum()])
    )
    noisy = X.copy()
    noisy[panel_b] = np.random.default_rng(2).permutation(noisy[panel_b])
    np.testing.assert_array_equal(screen_ranking(noisy, Y[:, MISSING], rows), screen_ranking(X, Y[:, MISSING], rows))
    ranking = screen_ranking(X, Y, rows)
    assert sorted(ranking.tolist()) == list(range(X.shape[1]))
    # the screen as input reduction on panels: fitted, no NaN reaches it
    train_idx, val_idx = _split(mdata.n_obs)
    model = _closed_form(mdata.copy(), train_idx, val_idx, input_reduction="screen", n_input_features=10)
    assert int(model.module.input_reduction_fitted) == 1


def test_ridge_validation_error_is_over_measured_values_and_nan_targets_are_refused():
    rng = np.random.default_rng(0)
    n, g, p = 120, 15, 3
    X = rng.normal(size=(n, g))
    Y = X @ rng.normal(size=(g, p)) + rng.normal(size=(n, p))
    t = rng.integers(0, 2, n)
    train, val = np.arange(90), np.arange(90, n)
    with pytest.raises(ValueError, match="NaN"):
        ridge_statistics(X, train, np.where(np.arange(90)[:, None] % 3 == 0, np.nan, Y[train]), t[train], 2)
    stats = ridge_statistics(X, train, Y[train], t[train], 2)
    Y_val = Y[val].copy()
    Y_val[::2, 0] = np.nan
    W, b, _, _, err = fit_ridge_from_statistics(stats, X_val=X, val_rows=val, Y_val=Y_val, t_val=t[val])
    residual = X[val] @ W + b[t[val]] - Y_val
    assert err == pytest.approx(np.nanmean(residual**2), rel=1e-10)


# --- uncertainty -------------------------------------------------------------------------------------


def _old_scale_and_scores(err, s_mc):
    """The calibration scale and scores of crossmodalnet e6a4777 (before missing proteins), frozen here."""
    if err.shape[0] >= _MIN_CELLS_PER_PROTEIN:
        scale = np.sqrt(np.mean((err / s_mc) ** 2, axis=0))
    else:
        scale = np.full(err.shape[1], np.sqrt(np.mean((err / s_mc) ** 2)))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return scale, err / (scale * s_mc)


def _old_level_spread(pred, reference):
    """``UncertaintyMixin._level_spread`` of crossmodalnet e6a4777, frozen here."""
    ref_pred, residual_sq = reference["reference_prediction"], reference["reference_residual_sq"]
    out = np.zeros_like(pred)
    n = ref_pred.shape[0]
    k = min(_N_NEIGHBOURS, n)
    for j in range(pred.shape[1]):
        order = np.argsort(ref_pred[:, j], kind="stable")
        cumulative = np.r_[0.0, np.cumsum(residual_sq[order, j])]
        pos = np.searchsorted(ref_pred[order, j], pred[:, j])
        start = np.clip(pos - k // 2, 0, n - k)
        out[:, j] = np.sqrt((cumulative[start + k] - cumulative[start]) / k)
    out[~np.isfinite(pred).all(axis=1)] = np.nan
    return out


@pytest.mark.parametrize("n_cells", [30, 150])
def test_calibration_scores_over_measured_values(n_cells):
    rng = np.random.default_rng(0)
    err = np.abs(rng.normal(size=(n_cells, 4))) * np.array([1.0, 2.0, 0.5, 1.0])
    s_mc = rng.uniform(0.5, 1.5, size=err.shape)
    # fully measured: exactly the previous calibration
    scale, scores, counts = calibration_scores(err, s_mc)
    old_scale, old_scores = _old_scale_and_scores(err, s_mc)
    np.testing.assert_array_equal(scale, old_scale)
    np.testing.assert_array_equal(scores, old_scores)
    np.testing.assert_array_equal(counts, n_cells)
    # protein 0 measured by the first 110 cells at most; protein 1 by 20
    masked = err.copy()
    masked[110:, 0] = np.nan
    masked[20:, 1] = np.nan
    scale, scores, counts = calibration_scores(masked, s_mc)
    np.testing.assert_array_equal(counts, [min(n_cells, 110), 20, n_cells, n_cells])
    np.testing.assert_array_equal(np.isfinite(scores), np.isfinite(masked))
    ratio_sq = (masked / s_mc) ** 2
    pooled = np.sqrt(np.nanmean(ratio_sq))
    for j in range(4):
        own = np.sqrt(np.nanmean(ratio_sq[:, j]))
        assert scale[j] == pytest.approx(own if counts[j] >= _MIN_CELLS_PER_PROTEIN else pooled, rel=1e-12)


def test_level_spread_skips_unmeasured_reference_residuals():
    rng = np.random.default_rng(0)
    reference = {"reference_prediction": rng.normal(size=(80, 3)), "reference_residual_sq": rng.uniform(size=(80, 3))}
    pred = rng.normal(size=(25, 3))
    pred[3] = np.nan
    out = UncertaintyMixin._level_spread(pred, reference)
    np.testing.assert_array_equal(out, _old_level_spread(pred, reference))
    masked = {k: v.copy() for k, v in reference.items()}
    masked["reference_residual_sq"][::3, 1] = np.nan
    kept = {k: v[np.arange(80) % 3 != 0] for k, v in reference.items()}
    np.testing.assert_allclose(UncertaintyMixin._level_spread(pred, masked)[:, 1], _old_level_spread(pred, kept)[:, 1])
    np.testing.assert_array_equal(UncertaintyMixin._level_spread(pred, masked)[:, [0, 2]], out[:, [0, 2]])


@pytest.fixture(scope="module")
def panel_model():
    mdata, panel_b = _panel_mdata(n_obs=200, n_genes=30, n_proteins=5)
    cmn.settings.seed = 0
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="panel")
    model = CrossmodalNet(mdata)
    model.train(max_epochs=2, train_size=0.6, validation_size=0.4, disentangle_epochs=0, **TRAIN)
    return model, mdata, panel_b


def test_training_on_panels_is_finite(panel_model):
    model, mdata, _ = panel_model
    W, b = _linear(model)
    assert np.isfinite(W).all()
    assert np.isfinite(b).all()
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in model.history_.values())
    assert np.isfinite(model.predict_protein().to_numpy()).all()


def test_calibration_counts_and_finite_intervals_on_panels(panel_model):
    model, mdata, panel_b = panel_model
    model.calibrate_uncertainty(n_samples=3)
    state = model.uncertainty_
    cells = np.asarray(state["calibration_indices"])
    assert cells.size == state["n_cells"] > 0
    # every validation cell calibrates the proteins it measured, panel B's cells included
    np.testing.assert_array_equal(np.sort(cells), np.sort(model.validation_indices_))
    assert panel_b[cells].any()
    measured = np.isfinite(np.asarray(mdata["prot"].X)[cells])
    np.testing.assert_array_equal(state["n_cells_per_protein"], measured.sum(axis=0))
    assert (state["n_cells_per_protein"][MISSING] == (~panel_b[cells]).sum()).all()
    # a protein panel B lacks is calibrated on panel A's cells only
    np.testing.assert_array_equal(np.isfinite(state["scores"]), measured)
    unc = model.predict_protein(return_uncertainty=True)
    for frame in (unc.std, unc.lower, unc.upper):
        assert np.isfinite(frame.to_numpy()).all()
    assert np.isfinite(unc.multiplier.to_numpy()).all()


def test_per_protein_calibration_count_is_written_by_tl(panel_model):
    model, mdata, _ = panel_model
    if model.uncertainty_ is None:
        model.calibrate_uncertainty(n_samples=3)
    out = cmn.tl.predict_protein(model.adata, model, uncertainty=True, key_added="p", copy=True)
    record = out.uns["p"]["uncertainty"]
    np.testing.assert_array_equal(record["n_calibration_cells_per_protein"], model.uncertainty_["n_cells_per_protein"])
    assert record["n_calibration_cells_per_protein"][MISSING].max() < record["n_calibration_cells"]
