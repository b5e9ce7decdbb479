"""Bad input gets a clear, early error (or a documented warning) and leaves the MuData untouched."""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from crossmodalnet.model import CrossmodalNet


def snapshot(mdata: md.MuData) -> dict:
    """Everything a failing call must not change."""

    def dense(x):
        return x.toarray() if sparse.issparse(x) else np.asarray(x)

    return {
        "obs": mdata.obs.copy(),
        "uns": sorted(mdata.uns),
        "obsm": sorted(mdata.obsm),
        "mods": {
            # anndata >= 0.13 lists None (.X) among the layers
            k: (a.obs.copy(), a.var.copy(), dense(a.X).copy(), sorted(a.layers, key=str), sorted(a.obsm), sorted(a.uns))
            for k, a in mdata.mod.items()
        },
    }


def assert_unchanged(before: dict, after: dict) -> None:
    pd.testing.assert_frame_equal(before["obs"], after["obs"])
    assert before["uns"] == after["uns"]
    assert before["obsm"] == after["obsm"]
    for k, (obs, var, X, layers, obsm, uns) in before["mods"].items():
        obs2, var2, X2, layers2, obsm2, uns2 = after["mods"][k]
        pd.testing.assert_frame_equal(obs, obs2)
        pd.testing.assert_frame_equal(var, var2)
        np.testing.assert_array_equal(X, X2)
        assert (layers, obsm, uns) == (layers2, obsm2, uns2)


def _setup_fails(mdata, exc, match, **kwargs):
    before = snapshot(mdata)
    with pytest.raises(exc, match=match):
        CrossmodalNet.setup_mudata(mdata, **kwargs)
    assert_unchanged(before, snapshot(mdata))


@pytest.fixture
def mdata(norm_mdata):
    return norm_mdata.copy()


def test_missing_modality(mdata):
    _setup_fails(mdata, KeyError, "no protein modality 'adt'", protein_key="adt")


def test_missing_layer(mdata):
    _setup_fails(mdata, KeyError, "no layer 'lognorm'", rna_layer="lognorm")


def test_missing_time_key(mdata):
    _setup_fails(mdata, KeyError, "`time_key='day'` is not a column", time_key="day")


def test_nan_time(mdata):
    mdata.obs["t_nan"] = np.where(np.arange(mdata.n_obs) < 3, np.nan, 1.0)
    _setup_fails(mdata, ValueError, "3 missing value", time_key="t_nan")
    mdata.obs["t_all_nan"] = np.nan
    _setup_fails(mdata, ValueError, "200 missing value", time_key="t_all_nan")


def test_single_time_point_trains_without_discriminator(mdata, caplog):
    mdata.obs["one_day"] = 3
    CrossmodalNet.setup_mudata(mdata, time_key="one_day")
    assert "single time point" in caplog.text
    model = CrossmodalNet(mdata, n_latent=4)
    assert model.module.adversarial_covariates == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_in_rna_and_protein(mdata, bad):
    X = mdata["rna"].X.toarray() if sparse.issparse(mdata["rna"].X) else mdata["rna"].X.copy()
    X[0, 0] = bad
    mdata["rna"].X = X
    _setup_fails(mdata, ValueError, "NaN or infinite")
    m2 = mdata.copy()
    m2["rna"].X = np.nan_to_num(X, nan=0.0, posinf=0.0)
    P = np.asarray(m2["prot"].X).copy()
    P[1, 1] = bad
    m2["prot"].X = P
    if np.isnan(bad):  # a dense protein matrix: NaN means "not measured" (test_missing_proteins.py)
        CrossmodalNet.setup_mudata(m2)
        m2["prot"].X = sparse.csr_matrix(P)  # stored NaN in a sparse matrix: refused, naming the fix
        _setup_fails(m2, ValueError, r"mdata\['prot'\] `.X` has 1 NaN.*dense in-memory protein matrix")
    else:
        _setup_fails(m2, ValueError, r"mdata\['prot'\] `.X` has 1 infinite value\(s\)")


def test_raw_counts_where_normalised_expected_warns(raw_mdata):
    mdata = raw_mdata.copy()
    with pytest.warns(UserWarning, match="looks like raw counts"):
        CrossmodalNet.setup_mudata(mdata)


def test_cells_differ_between_modalities(mdata):
    m = md.MuData({"rna": mdata["rna"].copy(), "prot": mdata["prot"][:150].copy()})
    _setup_fails(m, ValueError, "no 'prot' data")


def test_cells_in_different_order(mdata):
    m = md.MuData({"rna": mdata["rna"].copy(), "prot": mdata["prot"][::-1].copy()})
    _setup_fails(m, ValueError, "another order")


def test_duplicated_names(mdata):
    names = mdata["prot"].var_names.tolist()
    names[1] = names[0]
    mdata["prot"].var_names = names
    _setup_fails(mdata, ValueError, "duplicated protein name")
    m2 = mdata.copy()
    m2["prot"].var_names_make_unique()
    genes = m2["rna"].var_names.tolist()
    genes[2] = genes[3]
    m2["rna"].var_names = genes
    _setup_fails(m2, ValueError, "duplicated gene name")


def test_zero_variance_protein_warns_and_trains(mdata):
    P = np.asarray(mdata["prot"].X).copy()
    P[:, 0] = 1.5
    mdata["prot"].X = P
    with pytest.warns(UserWarning, match="constant across cells"):
        CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    assert np.isfinite(model.history["loss_train"].to_numpy()).all()
    assert np.isfinite(model.history["pearson_protein_validation"].to_numpy()).all()


def test_empty_cells_and_tiny_data(mdata):
    X = mdata["rna"].X.toarray() if sparse.issparse(mdata["rna"].X) else mdata["rna"].X.copy()
    X[:5] = 0
    mdata["rna"].X = X
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=1, batch_size=1024, accelerator="cpu", enable_progress_bar=False)
    assert np.isfinite(model.predict_protein().to_numpy()).all()


def test_predict_errors(trained_model):
    with pytest.raises(ValueError, match="outside the trained range"):
        trained_model.predict_protein(time=100)
    with pytest.raises(ValueError, match="not a number|neither a registered"):
        trained_model.predict_protein(time="day 9")
    with pytest.raises(TypeError, match="Expected a MuData"):
        trained_model.predict_protein(pd.DataFrame())


def test_setup_rejects_anndata(mdata):
    with pytest.raises(TypeError, match="expects a MuData"):
        CrossmodalNet.setup_mudata(mdata["rna"])


# --- cases handled at the preprocessing / tools boundary ------------------------------------------


def test_negative_counts_rejected_by_log_normalize(raw_mdata):
    import crossmodalnet as cmn

    mdata = raw_mdata.copy()
    X = mdata["rna"].X.toarray()
    X[0, 0] = -1
    mdata["rna"].X = X
    before = snapshot(mdata)
    with pytest.raises(ValueError, match="does not hold raw counts"):
        cmn.pp.log_normalize(mdata)
    assert_unchanged(before, snapshot(mdata))


def test_normalised_rna_where_raw_required(norm_mdata):
    import crossmodalnet as cmn

    mdata = norm_mdata.copy()
    before = snapshot(mdata)
    with pytest.raises(ValueError, match="looks normalised already"):
        cmn.pp.log_normalize(mdata, counts_layer=None)
    assert_unchanged(before, snapshot(mdata))


def test_unseen_time_category_at_predict(norm_mdata):
    mdata = norm_mdata.copy()
    mdata.obs["stage"] = pd.Categorical(np.where(mdata.obs["time"] > 2, "late", "early"))
    CrossmodalNet.setup_mudata(mdata, time_key="stage")
    model = CrossmodalNet(mdata, n_latent=4)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"'middle' was not seen in training .* \['early', 'late'\]"):
        model.predict_protein(time="middle")
    with pytest.raises(ValueError, match="not numeric, so it cannot be interpolated"):
        model.predict_protein(time=1.5)


def test_query_with_no_overlapping_genes(trained_model, norm_mdata):
    import crossmodalnet as cmn

    rna = norm_mdata["rna"].copy()
    rna.var_names = [f"other_{i}" for i in range(rna.n_vars)]
    query = cmn.pp.to_mudata(rna)
    before = snapshot(query)
    with pytest.raises(ValueError, match=r"only 0 of the model's 60 genes \(0.0%\)"):
        cmn.tl.predict_protein(query, trained_model, time=3)
    assert_unchanged(before, snapshot(query))
    assert "cmn_protein" not in query.obsm


def test_untrained_model_and_bad_model_dirs(mdata, tmp_path):
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=4)
    with pytest.raises(ValueError, match="not trained yet"):
        model.predict_protein()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CrossmodalNet.load(tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    with pytest.raises(ValueError, match="crossmodalnet.json is missing"):
        CrossmodalNet.load(tmp_path / "partial")
    # other format versions and corrupted files: tests/model/test_persistence.py


def test_setup_warns_about_isotypes_and_hashtags(norm_mdata):
    """Issue 14 item 4: isotype controls and HTOs in the protein modality are flagged with the fix."""
    import warnings as w

    import mudata as md

    mdata = norm_mdata.copy()
    prot = mdata["prot"].copy()
    prot.var_names = ["IgG1_control_TotalSeqB", "HTO_1", *prot.var_names[2:]]
    mdata = md.MuData({"rna": mdata["rna"].copy(), "prot": prot})
    with pytest.warns(
        UserWarning,
        match=r"isotype controls \['IgG1_control_TotalSeqB'\] and hashtags \(HTO\) \['HTO_1'\].*Remove them",
    ):
        CrossmodalNet.setup_mudata(mdata)
    clean = norm_mdata.copy()
    with w.catch_warnings():
        w.simplefilter("error", UserWarning)
        CrossmodalNet.setup_mudata(clean, time_key="time")


def test_setup_resolves_modality_prefixed_obs_columns(norm_mdata, caplog):
    """Issue 14 item 8, mudata >= 0.4 (issue 26): `md.MuData({...})` copies no modality obs column; the error gives
    the `pull_obs` call, which adds them with the modality as prefix ("rna:hash_id"), and setup then finds them."""
    rna, prot = norm_mdata["rna"].copy(), norm_mdata["prot"].copy()
    rna.obs["hash_id"] = norm_mdata.obs["batch"].to_numpy()
    rna.obs["day"] = norm_mdata.obs["time"].to_numpy()
    mdata = md.MuData({"rna": rna, "prot": prot})
    assert "hash_id" not in mdata.obs
    assert "rna:hash_id" not in mdata.obs
    before = snapshot(mdata)
    with pytest.raises(KeyError, match=r"mdata.pull_obs\(\['day'\], mods=\['rna'\]\)"):
        CrossmodalNet.setup_mudata(mdata, time_key="day", batch_key="hash_id")
    assert_unchanged(before, snapshot(mdata))
    mdata.pull_obs(["hash_id", "day"], mods=["rna"])
    assert "rna:hash_id" in mdata.obs
    with caplog.at_level("INFO", logger="crossmodalnet"):
        CrossmodalNet.setup_mudata(mdata, time_key="day", batch_key="hash_id")
    assert "`batch_key='hash_id'` is read from `mdata.obs['rna:hash_id']`" in caplog.text
    model = CrossmodalNet(mdata, n_latent=8)
    assert sorted(model.batch_categories.astype(str)) == sorted(rna.obs["hash_id"].astype(str).unique())
    assert model.summary_stats["n_time"] == 3
    # a query with the bare column name works as well as one with the prefix
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    query = norm_mdata.copy()
    query.obs["hash_id"] = rna.obs["hash_id"].to_numpy()
    query.obs["day"] = rna.obs["day"].to_numpy()
    np.testing.assert_allclose(model.predict_protein(query).to_numpy(), model.predict_protein().to_numpy(), atol=1e-6)


def test_setup_message_for_a_column_only_in_a_modality(norm_mdata):
    """Issue 14 item 8: the error names the modality and a fix that works (not `mdata.update()`)."""
    mdata = norm_mdata.copy()
    mdata["rna"].obs["donor"] = "d1"
    with pytest.raises(
        KeyError,
        match=r"column of `mdata\['rna'\].obs` but not of `mdata.obs`.*mdata.pull_obs\(\['donor'\], mods=\['rna'\]\)",
    ):
        CrossmodalNet.setup_mudata(mdata, batch_key="donor")
    mdata.pull_obs(["donor"], mods=["rna"])  # the fix the message gives works
    CrossmodalNet.setup_mudata(mdata, batch_key="donor")
    assert CrossmodalNet(mdata, n_latent=4).batch_categories.astype(str).tolist() == ["d1"]
    with pytest.raises(KeyError, match="is not a column of `mdata.obs`; columns are"):
        CrossmodalNet.setup_mudata(mdata, batch_key="nope")


def _two_modality_column(norm_mdata, column: str, values) -> md.MuData:
    rna, prot = norm_mdata["rna"].copy(), norm_mdata["prot"].copy()
    rna.obs[column] = values
    prot.obs[column] = values
    return md.MuData({"rna": rna, "prot": prot})


def test_batch_key_in_several_modalities_names_the_choice(norm_mdata):
    """Issue 26 item 6: `rna:hash_id` and `prot:hash_id` both exist; the error says so and how to choose."""
    values = norm_mdata.obs["batch"].astype(str).to_numpy()
    mdata = _two_modality_column(norm_mdata, "hash_id", values)
    for mod in ("rna", "prot"):  # as a MuData built by mudata < 0.4 has them
        mdata.obs[f"{mod}:hash_id"] = values
    mdata.obs = mdata.obs.drop(columns=["hash_id"], errors="ignore")
    _setup_fails(
        mdata,
        KeyError,
        r"`batch_key='hash_id'` is ambiguous: the column exists in several modalities \(`mdata.obs\['rna:hash_id'\]`, "
        r"`mdata.obs\['prot:hash_id'\]`\).*pass `batch_key='rna:hash_id'`.*mdata.obs\['hash_id'\] = mdata.obs\['rna:hash_id'\]",
        batch_key="hash_id",
    )
    CrossmodalNet.setup_mudata(mdata, batch_key="rna:hash_id")
    assert CrossmodalNet(mdata, n_latent=8).summary_stats["n_batch"] == 2
    # only in the modalities' obs (mudata >= 0.4 does not copy them): the message says where, and how to copy one
    only_mods = _two_modality_column(norm_mdata, "hash_id", values)
    only_mods.obs = only_mods.obs.drop(columns=[c for c in only_mods.obs.columns if c.endswith("hash_id")])
    _setup_fails(
        only_mods,
        KeyError,
        r"ambiguous: the column exists in several modalities \(`mdata\['rna'\].obs`, `mdata\['prot'\].obs`\).*"
        r"`mdata.pull_obs\(\['hash_id'\], mods=\['rna'\]\)` and pass `batch_key='rna:hash_id'`.*"
        r"`mdata.obs\['hash_id'\] = mdata\['rna'\].obs\['hash_id'\]`",
        batch_key="hash_id",
    )
    only_mods.pull_obs(["hash_id"], mods=["rna"])  # the fix the message gives
    CrossmodalNet.setup_mudata(only_mods, batch_key="rna:hash_id")


def test_batch_category_without_cells_is_not_a_batch(norm_mdata):
    """Issue 26 item 6: an unused categorical level (cells filtered out) is not counted as a batch."""
    mdata = norm_mdata.copy()
    used = sorted(mdata.obs["batch"].astype(str).unique())
    mdata.obs["batch"] = pd.Categorical(mdata.obs["batch"].astype(str), categories=[*used, "filtered_out"])
    before = snapshot(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    model = CrossmodalNet(mdata, n_latent=8)
    assert model.summary_stats["n_batch"] == len(used) == 2
    assert list(model.batch_categories.astype(str)) == used
    assert model.module.covariate_embeddings[1].num_embeddings == 2
    # the user's column keeps its categories
    assert list(mdata.obs["batch"].cat.categories) == [*used, "filtered_out"]
    pd.testing.assert_frame_equal(mdata.obs[before["obs"].columns], before["obs"])
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    np.testing.assert_array_equal(model.predict_protein().shape, (mdata.n_obs, mdata["prot"].n_vars))


def test_modality_replaced_without_update_is_refused_at_setup(norm_mdata):
    """Issue 26 item 1: `mdata.mod['prot'] = ...` without `mdata.update()` gets a clear error with the fix."""
    mdata = norm_mdata.copy()
    mdata.mod["prot"] = mdata["prot"][:, 2:].copy()
    _setup_fails(
        mdata,
        ValueError,
        r"out of date with its modality 'prot': `mdata.mod\['prot'\]` has 6 features but `mdata.var` maps 8 to it.*"
        r"`mdata.update\(\)`.*`cmn.pp.drop_proteins\(mdata, names\)`",
        time_key="time",
    )


def test_modality_replaced_behind_a_trained_model(norm_mdata):
    """Issue 26 item 1: proteins removed after training give a clear error, not an IndexError or misread columns."""
    import crossmodalnet as cmn

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=8)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    proteins = list(mdata["prot"].var_names)
    # the snippet the docs gave: the MuData is stale (its var still maps 8 proteins)
    mdata.mod["prot"] = mdata["prot"][:, 2:].copy()
    with pytest.raises(ValueError, match=r"out of date with its modality 'prot'"):
        cmn.tl.predict_protein(mdata, model, uncertainty=True)
    mdata.update()
    with pytest.raises(ValueError, match=r"no longer holds the 8 proteins the model was set up with \(it has 6"):
        cmn.tl.predict_protein(mdata, model, uncertainty=True)
    with pytest.raises(ValueError, match="replaced or subset after `setup_mudata`"):
        model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    # as many proteins, in another order: read by position they would be silently misassigned
    reordered = norm_mdata.copy()
    CrossmodalNet.setup_mudata(reordered, time_key="time")
    model = CrossmodalNet(reordered, preset="paper", n_latent=8)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    reordered.mod["prot"] = reordered["prot"][:, proteins[::-1]].copy()
    reordered.update()
    with pytest.raises(ValueError, match="no longer holds the 8 proteins"):
        model.calibrate_uncertainty()


def test_protein_all_zero_in_one_batch_warns_naming_it(mdata):
    """Issue 28 item 1: a protein one panel did not measure is all zero in that batch; warn, do not mask."""
    P = np.asarray(mdata["prot"].X).copy()
    in_batch = (mdata.obs["batch"] == "batch_1").to_numpy()
    P[in_batch, 2] = 0.0
    P[in_batch, 5] = 0.0
    mdata["prot"].X = P
    names = mdata["prot"].var_names
    with pytest.warns(UserWarning, match=r"2 protein\(s\).*`batch_key` group") as record:
        CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    message = next(str(w.message) for w in record if "`batch_key` group" in str(w.message))
    assert f"{names[2]} in ['batch_1']" in message
    assert f"{names[5]} in ['batch_1']" in message
    assert "time_key" not in message
    np.testing.assert_array_equal(mdata["prot"].X, P)  # warned, not masked
    # the same data as a sparse matrix (anndata.concat pads sparse matrices with zeros)
    mdata["prot"].X = sparse.csr_matrix(P)
    with pytest.warns(UserWarning, match=rf"{names[2]} in \['batch_1'\]"):
        CrossmodalNet.setup_mudata(mdata, batch_key="batch")


def test_protein_constant_in_no_batch_does_not_warn(mdata):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
