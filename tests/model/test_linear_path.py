"""Presets (``preset="paper"`` is Table S1) and the linear ridge path of the default model."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from crossmodalnet._metrics import pearson_per_protein
from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._linear import LINEAR_ALPHA_GRID
from crossmodalnet.model._presets import PRESETS, TRAIN_PRESETS
from crossmodalnet.module import CrossmodalModule
from crossmodalnet.train import FaderGradNormPlan

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture
def setup_mdata(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def _ridge_prediction(model, mdata) -> np.ndarray:
    """x W + b[t] on the registered scale, computed in numpy from the module's buffers."""
    m = model.module
    X = _dense(mdata["rna"].X)
    codes = model.adata_manager.get_from_registry("time").reshape(-1)
    scaled = X @ m.linear_weight.double().numpy() + m.linear_intercept.double().numpy()[codes]
    return scaled * m.protein_scale.double().numpy() + m.protein_mean.double().numpy()


def test_paper_preset_is_table_s1(setup_mdata):
    model = CrossmodalNet(setup_mdata, preset="paper")
    m = model.module
    assert (m.n_latent, m.lambda_dis) == (512, 0.5)
    assert [layer.p for layer in m.encoder.layers if isinstance(layer, torch.nn.Dropout)] == [0.05]
    assert m.discriminators[0].layers[0].out_features == 128
    assert any(isinstance(layer, torch.nn.BatchNorm1d) for layer in m.encoder.layers)
    assert not (m.linear_path)
    assert not (m.standardize_protein)
    assert not (m.standardize_input)
    assert m.input_reduction is None
    # same state-dict keys as the paper's module: nothing of the linear path or scaling exists
    paper = CrossmodalModule(m.n_input, m.n_output, m.n_cats_per_cov)
    assert list(m.state_dict()) == list(paper.state_dict())
    # the paper's last layer is not zeroed
    assert m.decoder.layers[-1].weight.abs().sum() > 0
    # Table S1 training settings
    # (training-plan settings are written once, as the plan's defaults; `train()` forwards only what is given)
    train_defaults = {k: p.default for k, p in inspect.signature(CrossmodalNet.train).parameters.items()}
    defaults = {k: p.default for k, p in inspect.signature(FaderGradNormPlan.__init__).parameters.items()}
    defaults["batch_size"] = train_defaults["batch_size"]
    assert train_defaults["lr"] is None
    # no disentangling phase: the paper's method ends with the restored weights
    assert TRAIN_PRESETS["paper"] == {
        "max_epochs": 500,
        "early_stopping_patience": 10,
        "early_stopping_min_delta": 0.0,
        "disentangle_epochs": 0,
        "disentangle_kwargs": {},
        "disentangle_tolerance": 0.01,
        "reduce_lr_on_plateau": False,
        "ema_decay": 0.0,  # the weights themselves are validated and kept, not an average
    }
    assert defaults["lr"] == 1e-3
    assert defaults["weight_decay"] == 5e-6
    assert defaults["batch_size"] == 256
    assert defaults["lr_discriminator"] == 0.0087
    assert defaults["weight_decay_discriminator"] == 5e-5
    assert defaults["learning_step"] == 3
    assert defaults["gradient_penalty"] == 0.4
    assert defaults["lr_gradnorm"] == 0.01475
    assert defaults["gradnorm_alpha"] == 0.5
    assert defaults["input_group_lasso"] == 0.0
    assert defaults["reduce_lr_on_plateau"] is False  # the paper's constant learning rate


def test_default_preset_and_overrides(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    assert model.preset == "default"
    assert model.module.linear_path
    assert model.module.standardize_protein
    assert PRESETS["default"]["linear_path"] is True
    off = CrossmodalNet(setup_mdata, n_latent=8, linear_path=False, standardize_protein=False)
    assert not off.module.linear_path
    assert not off.module.standardize_protein
    assert "linear path" in repr(model)
    assert "linear path" not in repr(off)
    with pytest.raises(ValueError, match="preset"):
        CrossmodalNet(setup_mdata, preset="Paper")


def test_linear_path_is_closed_form_ridge_and_training_starts_there(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    # lr=0: the networks cannot move, so the model stays at its starting point
    model.train(max_epochs=2, lr=0.0, **TRAIN)
    m = model.module
    assert bool(m.linear_path_fitted)
    assert float(m.linear_alpha) > 0
    tr = model.train_indices
    X = _dense(setup_mdata["rna"].X)[tr]
    Y = (_dense(setup_mdata["prot"].X)[tr] - m.protein_mean.double().numpy()) / m.protein_scale.double().numpy()
    codes = model.adata_manager.get_from_registry("time").reshape(-1)[tr]
    Xc, Yc = X.copy(), Y.copy()
    for c in np.unique(codes):
        Xc[codes == c] -= X[codes == c].mean(0)
        Yc[codes == c] -= Y[codes == c].mean(0)
    alpha = float(m.linear_alpha)
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    np.testing.assert_allclose(m.linear_weight.numpy(), W, rtol=1e-3, atol=1e-5)
    for c in np.unique(codes):
        b = Y[codes == c].mean(0) - X[codes == c].mean(0) @ W
        np.testing.assert_allclose(m.linear_intercept.numpy()[c], b, rtol=1e-3, atol=1e-5)
    # the penalty minimises the validation MSE (loss scale) over the grid
    va = model.validation_indices
    Xv = _dense(setup_mdata["rna"].X)[va]
    Yv = (_dense(setup_mdata["prot"].X)[va] - m.protein_mean.double().numpy()) / m.protein_scale.double().numpy()
    cv = model.adata_manager.get_from_registry("time").reshape(-1)[va]
    sv = np.linalg.svd(Xc, compute_uv=False)
    grid = np.asarray(LINEAR_ALPHA_GRID) * np.mean(sv[sv > sv.max() * 1e-10] ** 2)
    errors = []
    for a in grid:
        Wa = np.linalg.solve(Xc.T @ Xc + a * np.eye(X.shape[1]), Xc.T @ Yc)
        ba = {c: Y[codes == c].mean(0) - X[codes == c].mean(0) @ Wa for c in np.unique(codes)}
        errors.append(np.mean((Xv @ Wa + np.stack([ba[c] for c in cv]) - Yv) ** 2))
    assert alpha == pytest.approx(grid[int(np.argmin(errors))], rel=1e-6)
    # the decoder output layer starts at zero: predictions are exactly the ridge solution
    assert m.decoder.layers[-1].weight.abs().sum() == 0
    pred = model.predict_protein().to_numpy()
    np.testing.assert_allclose(pred, _ridge_prediction(model, setup_mdata), rtol=1e-4, atol=1e-4)


def test_validation_never_below_ridge(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    # a learning rate this large wrecks the networks: the ridge-only start must be restored
    model.train(max_epochs=3, lr=5.0, validation_size=0.15, **TRAIN)
    assert model.split_["best_epoch"] == -1
    pred = model.predict_protein().to_numpy()
    np.testing.assert_allclose(pred, _ridge_prediction(model, setup_mdata), rtol=1e-4, atol=1e-4)
    val = model.validation_indices
    ridge_val = np.nanmean(pearson_per_protein(pred[val], _dense(setup_mdata["prot"].X)[val]))
    assert model.split_["best_pearson_protein_validation"] == pytest.approx(ridge_val, abs=1e-5)
    # a normal run: best validation score at least the ridge-only score
    good = CrossmodalNet(setup_mdata, n_latent=8)
    good.train(max_epochs=5, validation_size=0.15, **TRAIN)
    assert good.split_["best_pearson_protein_validation"] >= ridge_val - 1e-6


def test_linear_path_without_validation_uses_gcv(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    with pytest.warns(UserWarning, match="No validation cells"):
        model.train(max_epochs=1, train_size=1.0, validation_size=0.0, **TRAIN)
    assert bool(model.module.linear_path_fitted)
    assert float(model.module.linear_alpha) > 0


def _network_output(model, mdata) -> np.ndarray:
    """MLP2's output ``decoder(z + time and batch embeddings)`` of every cell (loss scale), from the module's parts."""
    m = model.module
    x = torch.as_tensor(_dense(mdata["rna"].X), dtype=torch.float32)
    codes = [
        torch.as_tensor(model.adata_manager.get_from_registry(key).reshape(-1), dtype=torch.long)
        for key in ("time", "batch")
    ]
    m.eval()
    with torch.no_grad():
        embedding = sum(emb(c) for emb, c in zip(m.covariate_embeddings, codes, strict=True))
        return m.decoder(m.inference(x)["z"] + embedding).double().numpy()


def test_prediction_is_the_linear_path_plus_the_networks(setup_mdata):
    """After training, a prediction is the ridge path plus MLP2's output; with MLP2's output zeroed, the ridge."""
    model = CrossmodalNet(setup_mdata, n_latent=16)
    with pytest.warns(UserWarning, match="No validation cells"):  # no restoration: the networks keep what they learned
        model.train(max_epochs=5, lr=1e-2, validation_size=0.0, disentangle_epochs=0, **TRAIN)
    m = model.module
    scale, mean = m.protein_scale.double().numpy(), m.protein_mean.double().numpy()
    ridge = (_ridge_prediction(model, setup_mdata) - mean) / scale
    network = _network_output(model, setup_mdata)
    assert np.abs(network).mean() > 0.01  # the networks contribute
    pred = (model.predict_protein().to_numpy() - mean) / scale
    np.testing.assert_allclose(pred, ridge + network, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        m.decoder.layers[-1].weight.zero_()
        m.decoder.layers[-1].bias.zero_()
    np.testing.assert_allclose(
        model.predict_protein().to_numpy(), _ridge_prediction(model, setup_mdata), rtol=1e-4, atol=1e-4
    )


def test_networks_learn_the_residual_of_the_linear_path(setup_mdata):
    """The networks are trained on what the linear path leaves: here a planted offset of each protein.

    The linear path is set before training to a constant ``delta`` per protein (no genes), so the
    residual the networks must learn is the standardised protein minus ``delta``: their mean output
    on the training cells is ``-delta``. Networks trained on the protein itself would average 0.
    """
    model = CrossmodalNet(setup_mdata, n_latent=16)
    m = model.module
    delta = np.linspace(-1.0, 1.0, model.n_proteins)
    n_time = m.linear_intercept.shape[0]
    m.fit_linear_path(torch.zeros_like(m.linear_weight), torch.as_tensor(np.tile(delta, (n_time, 1))), 1.0)
    with pytest.warns(UserWarning, match="No validation cells"):
        model.train(
            max_epochs=15, lr=1e-2, batch_size=32, train_size=1.0, validation_size=0.0, disentangle_epochs=0, **TRAIN
        )
    np.testing.assert_array_equal(m.linear_intercept.numpy(), np.tile(delta, (n_time, 1)).astype(np.float32))
    train = np.sort(model.train_indices)
    scale, mean = m.protein_scale.double().numpy(), m.protein_mean.double().numpy()
    target = (_dense(setup_mdata["prot"].X) - mean) / scale
    network = _network_output(model, setup_mdata)[train]
    shift = network.mean(axis=0) - target[train].mean(axis=0)
    np.testing.assert_allclose(shift, -delta, atol=0.45)
    slope = np.polyfit(delta, shift, 1)[0]
    assert -1.3 < slope < -0.7, slope
    # and across cells it follows the rest of the residual
    r = pearson_per_protein(network, target[train] - delta)
    assert (r > 0.5).all(), r


def test_linear_path_save_load_and_determinism(setup_mdata, tmp_path):
    import scvi

    models = []
    for _ in range(2):
        scvi.settings.seed = 0
        torch.manual_seed(0)
        models.append(CrossmodalNet(setup_mdata, n_latent=8))
        models[-1].train(max_epochs=3, **TRAIN)
    model, model2 = models
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, model2.module.state_dict()[k], rtol=0, atol=0, msg=k)
    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", setup_mdata)
    assert loaded.preset == "default"
    assert loaded.module.linear_path
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, loaded.module.state_dict()[k], rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(model.predict_protein().to_numpy(), loaded.predict_protein().to_numpy())


def test_heldout_time_interpolates_linear_intercepts(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    model.train(max_epochs=1, lr=0.0, split="holdout_time", holdout_time=3, **TRAIN)
    m = model.module
    test = model.test_indices
    X = _dense(setup_mdata["rna"].X)[test]
    b = 0.5 * (m.linear_intercept[0] + m.linear_intercept[2]).double().numpy()  # days 2 and 4 around 3
    expected = (X @ m.linear_weight.double().numpy() + b) * m.protein_scale.double().numpy() + m.protein_mean.numpy()
    for how in ("embedding", "prediction"):
        pred = model.predict_protein(interpolation=how).to_numpy()[test]
        np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-4)


def test_fit_linear_path_checks_shapes():
    m = CrossmodalModule(6, 3, [2], n_latent=4, linear_path=True)
    with pytest.raises(ValueError, match="shape"):
        m.fit_linear_path(torch.zeros(5, 3), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="linear_path=False"):
        CrossmodalModule(6, 3, [2], n_latent=4).fit_linear_path(torch.zeros(6, 3), torch.zeros(2, 3), 1.0)
    # the untrained module predicts zero on the loss scale: x W + b with W = b = 0 and a zero output layer
    out = m.generative(
        torch.randn(4, 4), torch.zeros(4, 4), m.linear_prediction(torch.randn(4, 6), torch.eye(2)[[0, 1, 0, 1]])
    )
    torch.testing.assert_close(out["protein_scaled"], torch.zeros(4, 3))


def test_saliency_of_ridge_only_model_is_the_ridge_weight(setup_mdata):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    model.train(max_epochs=1, lr=0.0, **TRAIN)  # stays at the ridge solution
    m = model.module
    names = list(model.protein_names[:3])
    sal = model.get_saliency(proteins=names, method="gradient", aggregate="sum")
    # d(prediction_j)/d(x_g) = W[g, j] * scale_j for every cell
    expected = setup_mdata.n_obs * m.linear_weight.double().numpy()[:, :3] * m.protein_scale.double().numpy()[:3]
    np.testing.assert_allclose(sal.to_numpy(), expected, rtol=1e-4, atol=1e-6)


def test_linear_path_reads_only_its_genes_and_keeps_that_through_a_state_dict():
    """A linear path on a gene subset multiplies those columns only; the result is ``x W`` on every input."""
    import pickle

    n_genes, n_prot = 40, 3
    rng = np.random.default_rng(0)
    genes = np.array([1, 7, 8, 30])
    weight = torch.zeros(n_genes, n_prot)
    weight[genes] = torch.as_tensor(rng.normal(size=(genes.size, n_prot)), dtype=torch.float32)
    intercept = torch.as_tensor(rng.normal(size=(2, n_prot)), dtype=torch.float32)
    m = CrossmodalModule(n_genes, n_prot, [2], n_latent=4, linear_path=True)
    assert m.linear_genes is None  # unfitted: the full product (of zeros)
    m.fit_linear_path(weight, intercept, 1.0)
    np.testing.assert_array_equal(m.linear_genes.numpy(), genes)
    x = torch.as_tensor(rng.poisson(1.0, size=(6, n_genes)), dtype=torch.float32)
    t = torch.eye(2)[[0, 1, 0, 1, 1, 0]]
    expected = x.double() @ weight.double() + t.double() @ intercept.double()
    torch.testing.assert_close(m.linear_prediction(x, t).double(), expected, rtol=1e-6, atol=1e-6)
    # a sparse mini-batch multiplies the full weight (its zero rows cost nothing there)
    torch.testing.assert_close(m.linear_prediction(x.to_sparse_csr(), t).double(), expected, rtol=1e-6, atol=1e-6)
    # the gene positions are not saved but follow the weight: a fresh module loading the state dict, a pickled copy
    assert "linear_genes" not in m.state_dict()
    loaded = CrossmodalModule(n_genes, n_prot, [2], n_latent=4, linear_path=True)
    loaded.load_state_dict(m.state_dict())
    copy = pickle.loads(pickle.dumps(m))
    for other in (loaded, copy):
        np.testing.assert_array_equal(other.linear_genes.numpy(), genes)
        torch.testing.assert_close(other.linear_prediction(x, t), m.linear_prediction(x, t), rtol=0, atol=0)
    # a weight on every gene keeps the full product, bit for bit
    m.fit_linear_path(weight + 0.5, intercept, 1.0)
    assert m.linear_genes is None
    torch.testing.assert_close(m.linear_prediction(x, t), x @ (weight + 0.5) + t @ intercept, rtol=0, atol=0)
    # and loading a state dict with a subset again restores the subset
    m.load_state_dict(loaded.state_dict())
    np.testing.assert_array_equal(m.linear_genes.numpy(), genes)
