from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


def _fit(mdata, *, max_epochs=3, n_latent=16, seed=0, **kwargs):
    scvi.settings.seed = seed
    model = CrossmodalNet(mdata, n_latent=n_latent)
    model.train(max_epochs=max_epochs, **TRAIN, **kwargs)
    return model


def test_setup_adds_no_user_columns(norm_mdata):
    mdata = norm_mdata.copy()
    before_obs = set(mdata.obs.columns)
    before_mod = {k: (set(a.obs.columns), set(a.var.columns), set(a.layers)) for k, a in mdata.mod.items()}
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    added = set(mdata.obs.columns) - before_obs
    assert all(c.startswith("_scvi_") for c in added), added
    after_mod = {k: (set(a.obs.columns), set(a.var.columns), set(a.layers)) for k, a in mdata.mod.items()}
    assert after_mod == before_mod


def test_setup_errors(norm_mdata):
    mdata = norm_mdata.copy()
    with pytest.raises(KeyError, match="no RNA modality 'gex'"):
        CrossmodalNet.setup_mudata(mdata, rna_key="gex")
    with pytest.raises(KeyError, match="no layer 'nope'"):
        CrossmodalNet.setup_mudata(mdata, rna_layer="nope")
    with pytest.raises(KeyError, match="day"):
        CrossmodalNet.setup_mudata(mdata, time_key="day")
    with pytest.raises(TypeError, match="setup_mudata"):
        CrossmodalNet.setup_anndata(mdata["rna"])


def test_module_shapes_and_discriminators(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    model = CrossmodalNet(mdata, n_latent=8)
    m = model.module
    assert m.n_input == 60
    assert m.n_output == 8
    assert m.n_latent == 8
    assert m.n_cats_per_cov == [3, 2]
    assert m.adversarial_covariates == [0, 1]
    assert [e.weight.shape for e in m.covariate_embeddings] == [torch.Size([3, 8]), torch.Size([2, 8])]
    # discriminators are module submodules so they are saved with it
    assert any(k.startswith("discriminators.0.") for k in m.state_dict())
    assert model.time_categories.tolist() == sorted(mdata.obs["time"].unique().tolist())


def test_train_history_and_getters(trained_model, norm_mdata):
    model = trained_model
    hist = model.history
    for key in (
        "loss_train",
        "nlc_train",
        "mse_train",
        "w_nlc",
        "w_fader",
        "discriminator_accuracy_train",
        "pearson_cell_validation",
        "pearson_protein_validation",
    ):
        assert key in hist, key
    w = hist["w_nlc"].to_numpy().ravel() + hist["w_fader"].to_numpy().ravel()
    np.testing.assert_allclose(w, 2.0, rtol=1e-5)
    pred = model.predict_protein()
    assert isinstance(pred, pd.DataFrame)
    assert pred.shape == (200, 8)
    assert list(pred.columns) == list(norm_mdata["prot"].var_names)
    assert list(pred.index) == list(norm_mdata.obs_names)
    assert np.isfinite(pred.to_numpy()).all()
    z = model.get_latent_representation()
    assert z.shape == (200, 16)
    emb = model.get_time_embedding()
    assert emb.shape == (3, 16)
    assert list(emb.index) == ["2", "3", "4"] or len(emb.index) == 3


def test_split_recorded(trained_model):
    model = trained_model
    s = model.split_
    assert s["kind"] == "random"
    assert s["n_train"] + s["n_validation"] + s["n_test"] == 200
    assert len(model.train_indices) == s["n_train"]
    assert len(model.test_indices) == s["n_test"]
    assert not set(model.train_indices) & set(model.test_indices)
    assert "best_epoch" in s


def test_getters_do_not_write(trained_model):
    mdata = trained_model.adata
    obs, obsm, uns = list(mdata.obs.columns), list(mdata.obsm), list(mdata.uns)
    trained_model.predict_protein()
    trained_model.get_latent_representation()
    trained_model.get_time_embedding()
    assert (list(mdata.obs.columns), list(mdata.obsm), list(mdata.uns)) == (obs, obsm, uns)


def test_untrained_model_refuses_to_predict(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=8)
    with pytest.raises(ValueError, match="not trained"):
        model.predict_protein()


def test_time_interpolation_and_counterfactual(trained_model):
    model = trained_model
    table = model.module.covariate_embeddings[0].weight.detach()
    t = model.time_values
    mid = (t[0] + t[1]) / 2
    np.testing.assert_allclose(
        model._time_embedding_of(mid).numpy(), ((table[0] + table[1]) / 2).numpy(), rtol=1e-6, atol=1e-7
    )
    # a registered time point returns its own embedding exactly
    np.testing.assert_array_equal(model._time_embedding_of(t[2]).numpy(), table[2].numpy())
    p_mid = model.predict_protein(time=mid).to_numpy()
    p0 = model.predict_protein(time=t[0]).to_numpy()
    p1 = model.predict_protein(time=t[1]).to_numpy()
    assert p_mid.shape == p0.shape
    assert not np.allclose(p0, p1)
    # prediction is linear in the embedding only up to the decoder; it must lie between on average
    lo, hi = np.minimum(p0, p1).mean(), np.maximum(p0, p1).mean()
    assert lo - 1e-3 <= p_mid.mean() <= hi + 1e-3
    with pytest.raises(ValueError, match="outside the trained range"):
        model.predict_protein(time=t[-1] + 5)
    extrap = model.predict_protein(time=t[-1] + 1, allow_extrapolation=True)
    assert np.isfinite(extrap.to_numpy()).all()
    with pytest.raises(ValueError, match="neither a registered time point nor a number"):
        model.predict_protein(time="late")


def test_holdout_time_is_interpolated(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    t = np.sort(mdata.obs["time"].unique())
    model = _fit(mdata, max_epochs=2, split="holdout_time", holdout_time=t[1])
    assert model.split_["kind"] == "holdout_time"
    test = model.test_indices
    assert set(mdata.obs["time"].to_numpy()[test]) == {t[1]}
    assert model.trained_time_codes_.tolist() == [0, 2]
    emb = model.get_time_embedding()
    assert list(emb.index) == [str(t[0]), str(t[2])]
    full = model.get_time_embedding(include_untrained=True)
    np.testing.assert_allclose(
        full.iloc[1].to_numpy(), (full.iloc[0].to_numpy() + full.iloc[2].to_numpy()) / 2, rtol=1e-5
    )
    # cells of the held-out time point are predicted with the interpolated embedding
    own = model.predict_protein().to_numpy()[test]
    forced = model.predict_protein(time=(t[0] + t[2]) / 2).to_numpy()[test]
    np.testing.assert_allclose(own, forced, rtol=1e-5, atol=1e-6)


def test_holdout_end_point_needs_extrapolation(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    t = np.sort(mdata.obs["time"].unique())
    model = _fit(mdata, max_epochs=1, split="holdout_time", holdout_time=t[-1])
    with pytest.raises(ValueError, match="outside the trained range"):
        model.predict_protein()
    assert np.isfinite(model.predict_protein(allow_extrapolation=True).to_numpy()).all()


def test_no_time_key_trains_without_discriminator(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata)
    model = _fit(mdata, max_epochs=2)
    assert model.module.adversarial_covariates == []
    assert "discriminator_accuracy_train" not in model.history
    assert model.predict_protein().shape == (200, 8)


def test_batch_covariate(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    model = _fit(mdata, max_epochs=2)
    p = model.predict_protein()
    pb = model.predict_protein(batch=model.batch_categories[0])
    assert p.shape == pb.shape
    with pytest.raises(ValueError, match="Unknown batch"):
        model.predict_protein(batch="nope")


def test_unseen_query_batch_gets_the_average_batch_embedding(norm_mdata, caplog):
    """Issue 14 item 14: cells of a new donor/batch are predicted with the mean of the trained batch embeddings."""
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time", batch_key="batch")
    model = _fit(mdata, max_epochs=2)
    query = norm_mdata.copy()
    query.obs["batch"] = query.obs["batch"].astype(str)
    query.obs.loc[query.obs_names[:50], "batch"] = "new_donor"
    with caplog.at_level("WARNING", logger="crossmodalnet"):
        got = model.predict_protein(query)
    assert "50 cell(s) have batch categories the model was not trained on (['new_donor'])" in caplog.text
    # the same cells decoded by hand with the average batch embedding
    m = model.module
    x = torch.as_tensor(query["rna"].X[:50].toarray(), dtype=torch.float32)
    codes = torch.as_tensor([model._time_code(t) for t in query.obs["time"][:50]])
    with torch.inference_mode():
        m.eval()
        c = m.covariate_embeddings[0].weight[codes] + m.covariate_embeddings[1].weight.mean(0)
        linear = m.linear_prediction(x, torch.nn.functional.one_hot(codes, m.n_cats_per_cov[0]).float())
        want = m.generative(m.inference(x)["z"], c, linear)["protein"].numpy()
    np.testing.assert_allclose(got.to_numpy()[:50], want, atol=1e-5)
    # the other cells keep their own batch
    np.testing.assert_allclose(got.to_numpy()[50:], model.predict_protein().to_numpy()[50:], atol=1e-6)
    # a query without the batch column: every cell gets the average, with a warning
    del query.obs["batch"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="crossmodalnet"):
        no_col = model.predict_protein(query)
    assert "has no batch column 'batch'" in caplog.text
    np.testing.assert_allclose(no_col.to_numpy()[:50], want, atol=1e-5)


def test_batch_of_one_cell_does_not_crash(norm_mdata):
    from crossmodalnet.model import stratified_split

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    n_train = len(stratified_split(mdata.obs["time"].to_numpy(), rng=0)[0])
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    # a batch size of n_train - 1 leaves a last training batch of exactly one cell
    model.train(max_epochs=2, batch_size=n_train - 1, accelerator="cpu", enable_progress_bar=False, split_seed=0)
    assert model.split_["n_train"] == n_train
    assert model.is_trained_
    assert np.isfinite(model.predict_protein().to_numpy()).all()


def test_determinism(norm_mdata):
    preds = []
    states = []
    for _ in range(2):
        mdata = norm_mdata.copy()
        CrossmodalNet.setup_mudata(mdata, time_key="time")
        model = _fit(mdata, max_epochs=2, seed=42)
        preds.append(model.predict_protein().to_numpy())
        states.append({k: v.clone() for k, v in model.module.state_dict().items()})
    np.testing.assert_array_equal(preds[0], preds[1])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    other = _fit(mdata, max_epochs=2, seed=7).predict_protein().to_numpy()
    assert not np.array_equal(preds[0], other)


def test_save_load_roundtrip(trained_model, norm_mdata, tmp_path):
    model = trained_model
    pred = model.predict_protein()
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="already exists"):
        model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", norm_mdata.copy())
    pd.testing.assert_frame_equal(loaded.predict_protein(), pred)
    assert loaded.time_categories.tolist() == model.time_categories.tolist()
    assert list(loaded.gene_names) == list(model.gene_names)
    assert list(loaded.protein_names) == list(model.protein_names)
    assert loaded.split_ == model.split_
    np.testing.assert_array_equal(loaded.train_indices, model.train_indices)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    # loaded without data: predictions on a MuData passed explicitly
    bare = CrossmodalNet.load(tmp_path / "m")
    pd.testing.assert_frame_equal(bare.predict_protein(norm_mdata), pred)
    with pytest.raises(ValueError, match="loaded without data"):
        bare.predict_protein()
    # continued training after load
    loaded.train(max_epochs=1, **TRAIN)
    assert loaded.is_trained_


def test_predict_on_rna_only_query(trained_model, norm_mdata):
    import mudata as md

    query = md.MuData({"rna": norm_mdata["rna"].copy()})
    query.obs["time"] = norm_mdata.obs["time"].to_numpy()
    pred = trained_model.predict_protein(query)
    np.testing.assert_allclose(pred.to_numpy(), trained_model.predict_protein().to_numpy(), rtol=1e-5)
    # mudata >= 0.4 keeps the RNA modality's own time column out of `mdata.obs`: the error gives the pull_obs
    # call, after which the column is found under its prefix ("rna:time")
    unpulled = md.MuData({"rna": norm_mdata["rna"].copy()})
    with pytest.raises(KeyError, match=r"mdata.pull_obs\(\['time'\], mods=\['rna'\]\)"):
        trained_model.predict_protein(unpulled)
    unpulled.pull_obs(["time"], mods=["rna"])
    assert "rna:time" in unpulled.obs
    np.testing.assert_allclose(trained_model.predict_protein(unpulled).to_numpy(), pred.to_numpy())
    rna = norm_mdata["rna"].copy()
    del rna.obs["time"]
    no_time = md.MuData({"rna": rna})
    with pytest.raises(KeyError, match="pass `time=`"):
        trained_model.predict_protein(no_time)
    assert trained_model.predict_protein(no_time, time=3).shape == (200, 8)
    shuffled = md.MuData({"rna": norm_mdata["rna"][:, ::-1].copy()})
    with pytest.raises(ValueError, match="harmonize_genes"):
        trained_model.predict_protein(shuffled, time=3)
    with pytest.raises(TypeError, match="to_mudata"):
        trained_model.predict_protein(norm_mdata["rna"])


def test_sparse_rna_input_matches_dense(trained_model, norm_mdata):
    import mudata as md
    from scipy import sparse

    rna = norm_mdata["rna"].copy()
    rna.X = sparse.csr_matrix(np.asarray(rna.X.todense() if sparse.issparse(rna.X) else rna.X))
    dense = norm_mdata["rna"].copy()
    dense.X = np.asarray(rna.X.todense())
    p_dense = trained_model.predict_protein(md.MuData({"rna": dense}), time=2)
    # sparse batches through the sparse first layer: same numbers up to float32 summation order
    assert trained_model.module.sparse_input
    p_sparse = trained_model.predict_protein(md.MuData({"rna": rna}), time=2)
    np.testing.assert_allclose(p_sparse.to_numpy(), p_dense.to_numpy(), rtol=1e-4, atol=1e-5)
    z_sparse = trained_model.get_latent_representation(md.MuData({"rna": rna}))
    z_dense = trained_model.get_latent_representation(md.MuData({"rna": dense}))
    np.testing.assert_allclose(z_sparse, z_dense, rtol=1e-4, atol=1e-5)
    # densified sparse batches give the dense result exactly
    trained_model.module.sparse_input = False
    try:
        p_densified = trained_model.predict_protein(md.MuData({"rna": rna}), time=2)
    finally:
        trained_model.module.sparse_input = True
    np.testing.assert_array_equal(p_densified.to_numpy(), p_dense.to_numpy())


def test_end_to_end_learns_planted_signal():
    """Train on synthetic_cite and beat a per-time mean predictor on per-protein Pearson."""
    scvi.settings.seed = 0
    mdata = cmn.datasets.synthetic_cite(n_obs=600, n_genes=150, n_proteins=10, n_time_points=3, rng=1)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=64)
    model.train(max_epochs=60, **TRAIN)
    test = model.test_indices
    pred = model.predict_protein().to_numpy()[test]
    true = np.asarray(mdata["prot"].X)[test]
    r = [np.corrcoef(pred[:, j], true[:, j])[0, 1] for j in range(true.shape[1])]
    assert np.nanmean(r) > 0.4


def test_prediction_space_interpolation(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    t = np.sort(mdata.obs["time"].unique())
    model = _fit(mdata, max_epochs=2, split="holdout_time", holdout_time=t[1])
    test = model.test_indices
    lo = model.predict_protein(time=t[0]).to_numpy()[test]
    hi = model.predict_protein(time=t[2]).to_numpy()[test]
    a = (t[1] - t[0]) / (t[2] - t[0])
    mixed = model.predict_protein(interpolation="prediction").to_numpy()[test]
    np.testing.assert_allclose(mixed, (1 - a) * lo + a * hi, rtol=1e-4, atol=1e-5)
    # trained time points: both modes give the same predictions
    train = model.train_indices
    np.testing.assert_allclose(
        model.predict_protein(interpolation="prediction").to_numpy()[train],
        model.predict_protein().to_numpy()[train],
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="`interpolation` must be"):
        model.predict_protein(interpolation="spline")


def test_interpolate_time_embedding_public(trained_model):
    t = trained_model.time_values
    emb = trained_model.interpolate_time_embedding([t[0], (t[0] + t[1]) / 2])
    table = trained_model.get_time_embedding()
    assert emb.shape == (2, 16)
    np.testing.assert_array_equal(emb.iloc[0].to_numpy(), table.iloc[0].to_numpy())
    np.testing.assert_allclose(
        emb.iloc[1].to_numpy(), (table.iloc[0].to_numpy() + table.iloc[1].to_numpy()) / 2, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="outside the trained range"):
        trained_model.interpolate_time_embedding([t[-1] + 10])


def test_trainer_kwargs_can_override_validation_interval(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = _fit(mdata, max_epochs=4, check_val_every_n_epoch=2, early_stopping=False)
    hist = model.history["pearson_protein_validation"].dropna()
    assert len(hist) == 2  # validated after epochs 2 and 4 only
    assert len(model.history["loss_train"]) == 4


def test_training_without_validation_cells(norm_mdata):
    """validation_size=0: training runs with the validation loop off and warns that early stopping is off."""
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    with pytest.warns(UserWarning, match="No validation cells"):
        model.train(max_epochs=2, validation_size=0.0, **TRAIN)
    assert model.split_["n_validation"] == 0
    assert "best_epoch" not in model.split_
    assert len(model.history["loss_train"]) == 2
    assert "pearson_protein_validation" not in model.history
    assert np.isfinite(model.predict_protein().to_numpy()).all()


def test_best_validation_epoch_is_restored(norm_mdata, monkeypatch):
    import copy

    import lightning.pytorch as pl

    from crossmodalnet.train import FaderGradNormPlan

    # script the monitored metric so the best epoch (1) is known and is not the last one
    script = [0.2, 0.9, 0.5, 0.6, 0.4]
    calls = iter(script)
    scores = FaderGradNormPlan.validation_scores
    monkeypatch.setattr(
        FaderGradNormPlan,
        "validation_scores",
        staticmethod(lambda pred, true: {**scores(pred, true), "pearson_protein_validation": next(calls)}),
    )

    class Snapshots(pl.Callback):
        def __init__(self):
            self.states = {}

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.states[trainer.current_epoch] = copy.deepcopy(pl_module.module.state_dict())

    snapshots = Snapshots()
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    # without the disentangling phase, which changes the restored encoder afterwards (tests/train/test_disentangle.py)
    model = _fit(
        mdata,
        max_epochs=len(script),
        early_stopping=False,
        num_sanity_val_steps=0,
        callbacks=[snapshots],
        disentangle_epochs=0,
    )
    np.testing.assert_allclose(model.history["pearson_protein_validation"].to_numpy().ravel(), script)
    assert model.split_["best_epoch"] == 1
    assert model.split_["best_pearson_protein_validation"] == pytest.approx(0.9)
    assert sorted(snapshots.states) == list(range(len(script)))
    state = model.module.state_dict()
    last = snapshots.states[len(script) - 1]
    assert any(not torch.equal(v, last[k]) for k, v in state.items()), "the last epoch's weights were kept"
    for k, v in snapshots.states[1].items():
        assert torch.equal(state[k], v), f"{k} is not the best epoch's"


def test_extrapolation_from_one_trained_time_point():
    """Two time points, one held out: allowed extrapolation uses the one trained embedding."""
    mdata = cmn.datasets.synthetic_cite(n_obs=120, n_genes=30, n_proteins=4, n_time_points=2, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = _fit(mdata, max_epochs=1, n_latent=8, split="holdout_time", holdout_time=3)
    assert model.trained_time_codes_.tolist() == [0]
    with pytest.raises(ValueError, match=r"outside the trained range \[2.0, 2.0\].*allow_extrapolation=True"):
        model.predict_protein()
    pred = model.predict_protein(allow_extrapolation=True).to_numpy()
    np.testing.assert_array_equal(pred, model.predict_protein(time=2).to_numpy())
    emb = model.interpolate_time_embedding([1.0, 3.0, 7.5], allow_extrapolation=True).to_numpy()
    trained = model.module.covariate_embeddings[0].weight.detach().numpy()[0]
    np.testing.assert_array_equal(emb, np.tile(trained, (3, 1)))
    # the held-out embedding row was never trained and is not what the held-out cells get
    untrained = model.module.covariate_embeddings[0].weight.detach().numpy()[1]
    assert not np.allclose(untrained, trained)


@pytest.mark.slow
def test_adversary_removes_time_from_latent():
    """On data with a strong time effect, a linear probe reads time from ``z`` much less well with the adversary.

    Without the encoder's adversarial gradient, ``lambda_dis=0.5`` trains exactly like ``lambda_dis=0``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    mdata = cmn.datasets.synthetic_cite(n_obs=600, n_genes=60, n_proteins=8, time_effect=5.0, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    probe = {}
    for lambda_dis in (0.5, 0.0):
        scvi.settings.seed = 0
        model = CrossmodalNet(mdata, preset="paper", n_latent=16, lambda_dis=lambda_dis)
        model.train(max_epochs=40, early_stopping=False, **TRAIN)
        z = model.get_latent_representation()
        probe[lambda_dis] = cross_val_score(LogisticRegression(max_iter=2000), z, mdata.obs["time"], cv=5).mean()
    # 3 time points: chance is 1/3
    assert probe[0.5] < 0.6, probe
    assert probe[0.5] < probe[0.0] - 0.15, probe


@pytest.fixture
def cmn_seed():
    """Restore ``cmn.settings.seed`` after the test."""
    before = cmn.settings.seed
    yield
    cmn.settings.seed = before


def _state_with_seed(norm_mdata, seed):
    cmn.settings.seed = seed
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=8)  # default preset: dropout, shuffled mini-batches, linear path
    model.train(max_epochs=3, disentangle_epochs=2, **TRAIN)
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}, model.history["loss_train"]


def test_one_seed_gives_the_same_model(norm_mdata, cmn_seed):
    """Issue 26 item 5: `cmn.settings.seed` alone makes two trainings in one process bit-identical on CPU."""
    scvi.settings.seed = None  # not what the test's autouse fixture set
    torch.rand(7)  # the global random state moved on
    first, history = _state_with_seed(norm_mdata, 11)
    scvi.settings.seed = 123  # reseeds every generator: must not matter
    torch.rand(3)
    second, history_again = _state_with_seed(norm_mdata, 11)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)
    pd.testing.assert_frame_equal(history, history_again)
    other, _ = _state_with_seed(norm_mdata, 12)
    assert not torch.equal(first["encoder.layers.0.weight"], other["encoder.layers.0.weight"])
    with pytest.raises(ValueError, match="non-negative integer or None"):
        cmn.settings.seed = -1


def test_progress_bar_stays_out_of_captured_stdout(norm_mdata, capsys, monkeypatch):
    """Issue 26 item 7: scvi-tools' bar (carriage returns on stdout) is drawn only where stdout is a terminal."""
    from crossmodalnet._settings import stdout_is_interactive

    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=8)
    capsys.readouterr()
    model.train(max_epochs=2, batch_size=64, accelerator="cpu")  # stdout is captured here: no bar
    out = capsys.readouterr().out
    assert "\r" not in out
    assert "Epoch" not in out
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=True)  # asked for: drawn
    assert "Epoch 1/1" in capsys.readouterr().out

    class _Terminal:
        def isatty(self):
            return True

        def write(self, text):
            return len(text)

        def flush(self):
            pass

    assert stdout_is_interactive() is False
    monkeypatch.setattr("sys.stdout", _Terminal())
    assert stdout_is_interactive() is True
