"""Issue 28: NaN (or ``False`` in a mask layer) in the registered proteins means "not measured"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein, prediction_metrics
from crossmodalnet.model import CrossmodalNet
from crossmodalnet.nn import fader_loss, masked_mse, measured_entries, nlc_loss, pearson_per_row

from .test_validation import _setup_fails

MISSING = 3  # proteins 0..2 are not measured in batch_1


@pytest.fixture
def mdata(norm_mdata):
    return norm_mdata.copy()


def _with_missing(mdata, *, fill=np.nan, mask_layer: str | None = None):
    """Proteins 0..2 not measured in ``batch_1``: NaN there, or ``fill`` and a mask layer."""
    P = np.asarray(mdata["prot"].X, dtype=np.float32).copy()
    missing = np.zeros(P.shape, dtype=bool)
    missing[(mdata.obs["batch"] == "batch_1").to_numpy(), :MISSING] = True
    P[missing] = fill
    mdata["prot"].X = P
    if mask_layer is not None:
        mdata["prot"].layers[mask_layer] = ~missing
    return missing


# --- losses and metrics --------------------------------------------------------------------------
def test_masked_losses_equal_the_losses_over_measured_entries():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 5, generator=gen, requires_grad=True)
    target = torch.randn(6, 5, generator=gen)
    target[0, :2] = float("nan")
    target[1, :4] = float("nan")  # one measured protein: no correlation, left out of the NLC
    measured = measured_entries(target)
    assert measured is not None
    assert int((~measured).sum()) == 6
    assert measured_entries(torch.zeros(2, 2)) is None
    # NLC: cell 0 over its 3 measured proteins, cell 1 left out
    r0 = pearson_per_row(pred[:1, 2:], target[:1, 2:])
    r_rest = pearson_per_row(pred[2:], target[2:])
    expected = -torch.log(torch.clamp((torch.cat([r0, r_rest]) + 1) / 2, min=1e-6)).mean()
    torch.testing.assert_close(nlc_loss(pred, target), expected)
    m = ~torch.isnan(target)
    torch.testing.assert_close(masked_mse(pred, target), ((pred - target)[m] ** 2).mean())
    # the module's Fader term takes the same masked MSE
    _, fader_mse, _ = fader_loss(pred, target, disc_ce=[])
    torch.testing.assert_close(fader_mse, ((pred - target)[m] ** 2).mean())
    (nlc_loss(pred, target) + masked_mse(pred, target)).backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[1, :4], torch.zeros(4))  # not measured, one measured: no gradient
    assert torch.equal(pred.grad[0, :2], torch.zeros(2))


def test_metrics_leave_unmeasured_entries_out():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(40, 4))
    pred = true + rng.normal(size=true.shape)
    masked = true.copy()
    masked[:15, 0] = np.nan
    np.testing.assert_allclose(
        pearson_per_protein(pred, masked)[0], pearson_per_protein(pred[15:, :1], true[15:, :1])[0]
    )
    np.testing.assert_allclose(pearson_per_cell(pred, masked)[:15], pearson_per_cell(pred[:15, 1:], true[:15, 1:]))
    metrics = prediction_metrics(pred, masked)
    np.testing.assert_array_equal(metrics["per_protein"]["n_measured"], [25, 40, 40, 40])
    np.testing.assert_allclose(metrics["per_protein"]["mse"][0], ((pred - true)[15:, 0] ** 2).mean())
    sub = prediction_metrics(pred[15:, :1], true[15:, :1])
    np.testing.assert_allclose(metrics["per_protein"]["spearman"][0], sub["per_protein"]["spearman"][0])
    # no NaN: the same numbers as before
    assert prediction_metrics(pred, true)["per_protein"]["n_measured"].tolist() == [40] * 4


# --- registration --------------------------------------------------------------------------------
def test_nan_proteins_are_registered_and_counted(mdata):
    missing = _with_missing(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    model = CrossmodalNet(mdata)
    counts = model.measured_cells
    in_b1 = int((mdata.obs["batch"] == "batch_1").sum())
    assert counts.shape == (mdata["prot"].n_vars, 2)
    assert counts.columns.tolist() == ["batch_0", "batch_1"]
    assert counts["batch_1"].iloc[:MISSING].tolist() == [0] * MISSING
    assert counts["batch_1"].iloc[MISSING:].tolist() == [in_b1] * (mdata["prot"].n_vars - MISSING)
    assert int(counts.to_numpy().sum()) == int((~missing).sum())


def test_protein_measured_nowhere_is_refused(mdata):
    P = np.asarray(mdata["prot"].X).copy()
    P[:, 4] = np.nan
    mdata["prot"].X = P
    name = mdata["prot"].var_names[4]
    _setup_fails(
        mdata,
        ValueError,
        rf"1 protein\(s\) of mdata\['prot'\] `.X` are NaN .* in every cell: \['{name}'\].*drop_proteins",
    )


def test_cells_without_any_protein_warn(mdata):
    P = np.asarray(mdata["prot"].X).copy()
    P[:2] = np.nan
    mdata["prot"].X = P
    with pytest.warns(UserWarning, match=r"2 cell\(s\) of mdata\['prot'\] measured no protein"):
        CrossmodalNet.setup_mudata(mdata)


def test_mask_layer_errors(mdata):
    missing = _with_missing(mdata, fill=0.0)
    _setup_fails(mdata, KeyError, "has no such layer", protein_mask_layer="measured")
    mdata["prot"].layers["measured"] = (~missing).astype(np.int8)
    _setup_fails(mdata, ValueError, "must be boolean", protein_mask_layer="measured")
    P = np.asarray(mdata["prot"].X).copy()
    P[0, 5] = np.nan  # a NaN the mask calls measured
    mdata["prot"].X = P
    mdata["prot"].layers["measured"] = ~missing
    _setup_fails(mdata, ValueError, "does not match the matrix", protein_mask_layer="measured")
    bad = ~missing
    bad[:, 6] = False
    mdata["prot"].X = np.nan_to_num(P)
    mdata["prot"].layers["measured"] = bad
    _setup_fails(mdata, ValueError, "in every cell", protein_mask_layer="measured")


def test_zeros_of_a_sparse_join_are_measured_unless_masked(mdata):
    """Missing values are never inferred from zeros: without a mask they count as measured (with the warning)."""
    missing = _with_missing(mdata, fill=0.0, mask_layer="measured")
    mdata["prot"].X = sparse.csr_matrix(mdata["prot"].X)
    with pytest.warns(UserWarning, match="`batch_key` group"):
        CrossmodalNet.setup_mudata(mdata, batch_key="batch")
    assert (CrossmodalNet(mdata).measured_cells.to_numpy() > 0).all()
    CrossmodalNet.setup_mudata(mdata, batch_key="batch", protein_mask_layer="measured")
    assert int(CrossmodalNet(mdata).measured_cells.to_numpy().sum()) == int((~missing).sum())


# --- training ----------------------------------------------------------------------------------
def _train(mdata, preset, *, mask_layer=None, epochs=3):
    cmn.settings.seed = 0
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch", protein_mask_layer=mask_layer)
    model = CrossmodalNet(mdata, preset=preset)
    model.train(max_epochs=epochs, disentangle_epochs=0, batch_size=64)
    return model


def _state(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_unmeasured_values_do_not_change_training(norm_mdata, preset):
    """Changing a value the mask calls unmeasured gives identical weights, history and predictions; NaN gives the same."""
    models = []
    for fill in (0.0, 50.0):
        mdata = norm_mdata.copy()
        _with_missing(mdata, fill=fill, mask_layer="measured")
        models.append(_train(mdata, preset, mask_layer="measured"))
    nan_data = norm_mdata.copy()
    _with_missing(nan_data)
    models.append(_train(nan_data, preset))
    reference = _state(models[0])
    for other in models[1:]:
        state = _state(other)
        assert all(torch.equal(reference[k], state[k]) for k in reference)
        for key in ("loss_train", "pearson_protein_validation"):
            np.testing.assert_array_equal(models[0].history_[key].to_numpy(), other.history_[key].to_numpy())
    pred = models[0].predict_protein()
    assert np.isfinite(pred.to_numpy()).all()
    np.testing.assert_array_equal(pred.to_numpy(), models[2].predict_protein().to_numpy())
    # the unmeasured values are not ignored by accident: a measured value changed changes training
    mdata = norm_mdata.copy()
    _with_missing(mdata, fill=0.0, mask_layer="measured")
    P = np.asarray(mdata["prot"].X).copy()
    P[(mdata.obs["batch"] == "batch_0").to_numpy(), 0] += 1.0
    mdata["prot"].X = P
    changed = _state(_train(mdata, preset, mask_layer="measured"))
    assert not all(torch.equal(reference[k], changed[k]) for k in reference)


def test_save_load_keeps_the_mask(norm_mdata, tmp_path):
    mdata = norm_mdata.copy()
    _with_missing(mdata, fill=0.0, mask_layer="measured")
    model = _train(mdata, "paper", mask_layer="measured", epochs=2)
    model.save(tmp_path / "m", save_anndata=False)
    loaded = CrossmodalNet.load(tmp_path / "m", mdata)
    assert loaded.registry_["setup_args"]["protein_mask_layer"] == "measured"
    assert loaded.measured_cells.equals(model.measured_cells)
    np.testing.assert_array_equal(loaded.predict_protein().to_numpy(), model.predict_protein().to_numpy())
    # continuing training reads the mask again: the unmeasured zeros still do not count
    assert loaded._has_protein_mask()
    np.testing.assert_array_equal(
        np.isnan(loaded._registered_dense("protein", np.arange(mdata.n_obs))), ~mdata["prot"].layers["measured"]
    )
    # without data, the record is still there
    bare = CrossmodalNet.load(tmp_path / "m")
    assert bare.measured_cells.equals(model.measured_cells)


def test_tl_scores_only_what_the_mask_layer_calls_measured(norm_mdata):
    mdata = norm_mdata.copy()
    missing = _with_missing(mdata, fill=0.0, mask_layer="measured")
    model = _train(mdata, "paper", mask_layer="measured", epochs=2)
    cmn.tl.predict_protein(mdata, model, key_added="pred")
    np.testing.assert_array_equal(mdata.obsm["pred_measured"].to_numpy(), ~missing)
    metrics = mdata.uns["pred"]["metrics"]
    scored = mdata.obs_names.isin(metrics["cell_names"])
    np.testing.assert_array_equal(metrics["per_protein"]["n_measured"], (~missing[scored]).sum(axis=0))


def test_unmeasured_proteins_are_decoded_with_the_measuring_batches(norm_mdata):
    """A protein batch_1 did not measure is decoded, for its cells, with the embedding of the batch that measured it."""
    mdata = norm_mdata.copy()
    _with_missing(mdata)
    model = _train(mdata, "paper", epochs=2)
    emb = model.module.covariate_embeddings[1].weight
    with torch.no_grad():  # batches far apart, so the rule shows
        emb[1] += 1.0
    in_b1 = (mdata.obs["batch"] == "batch_1").to_numpy()
    pred = model.predict_protein().to_numpy()
    as_b0 = model.predict_protein(batch="batch_0").to_numpy()
    as_b1 = model.predict_protein(batch="batch_1").to_numpy()  # an explicit batch: every protein with its embedding
    np.testing.assert_array_equal(pred[in_b1, :MISSING], as_b0[in_b1, :MISSING])
    np.testing.assert_array_equal(pred[in_b1, MISSING:], as_b1[in_b1, MISSING:])
    np.testing.assert_array_equal(pred[~in_b1], as_b0[~in_b1])
    assert not np.allclose(as_b1[in_b1, :MISSING], as_b0[in_b1, :MISSING])
    # an unseen batch gets the average embedding, except for proteins only batch_0 measured
    query = mdata.copy()
    query.obs["batch"] = "new_donor"
    unseen = model.predict_protein(query).to_numpy()
    np.testing.assert_array_equal(unseen[:, :MISSING], as_b0[:, :MISSING])
    assert not np.allclose(unseen[:, MISSING:], as_b0[:, MISSING:])


def test_dask_predictions_decode_unmeasured_proteins_the_same_way(norm_mdata):
    da = pytest.importorskip("dask.array")
    import anndata as ad

    mdata = norm_mdata.copy()
    _with_missing(mdata)
    model = _train(mdata, "paper", epochs=2)
    with torch.no_grad():
        model.module.covariate_embeddings[1].weight[1] += 1.0
    want = model.predict_protein().to_numpy()
    rna = mdata["rna"]
    X = rna.X.toarray() if sparse.issparse(rna.X) else np.asarray(rna.X)
    query = cmn.pp.to_mudata(ad.AnnData(X=da.from_array(X, chunks=(64, -1)), obs=rna.obs.copy(), var=rna.var.copy()))
    query.obs["batch"] = mdata.obs["batch"].to_numpy()
    query.obs["time"] = mdata.obs["time"].to_numpy()
    np.testing.assert_allclose(model.predict_protein(query).compute(), want, rtol=1e-5, atol=1e-5)
