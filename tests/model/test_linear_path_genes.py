"""The linear path's gene set (``linear_path_genes``): chosen with its penalty on validation cells."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from mudata import MuData

from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._fitting import screen_genes
from crossmodalnet.model._linear import fit_ridge_by_time

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def _mdata(kind: str, seed: int = 0) -> MuData:
    """Planted data: ``"sparse"`` (each protein = 2 of 400 genes, 300 cells) or ``"dense"`` (every gene counts)."""
    rng = np.random.default_rng(seed)
    if kind == "sparse":
        n_obs, n_genes, n_prot = 300, 400, 6
        W = np.zeros((n_genes, n_prot))
        for j in range(n_prot):
            W[[2 * j, 2 * j + 1], j] = 1.0
        noise = 0.3
    else:
        n_obs, n_genes, n_prot = 1000, 300, 4
        W = rng.normal(size=(n_genes, n_prot)) / np.sqrt(n_genes)
        noise = 0.2
    X = rng.normal(size=(n_obs, n_genes)).astype(np.float32)
    Y = (X @ W + noise * rng.normal(size=(n_obs, n_prot))).astype(np.float32)
    rna = ad.AnnData(X)
    rna.var_names = [f"g{i}" for i in range(n_genes)]
    prot = ad.AnnData(Y)
    prot.var_names = [f"p{i}" for i in range(n_prot)]
    mdata = MuData({"rna": rna, "prot": prot})
    CrossmodalNet.setup_mudata(mdata)
    return mdata


def _fit(mdata, **kwargs) -> CrossmodalNet:
    import scvi

    scvi.settings.seed = 0
    torch.manual_seed(0)
    model = CrossmodalNet(mdata, n_latent=8, **kwargs)
    model.train(max_epochs=1, lr=0.0, **TRAIN)
    return model


def _validation_mse(model, mdata, genes) -> float:
    """Validation MSE (loss scale) of a ridge fitted on the training cells over ``genes``, computed independently."""
    m = model.module
    X, Y = np.asarray(mdata["rna"].X, dtype=np.float64), np.asarray(mdata["prot"].X, dtype=np.float64)
    Y = (Y - m.protein_mean.double().numpy()) / m.protein_scale.double().numpy()
    tr, va = model.train_indices, model.validation_indices
    zeros = np.zeros(len(X), dtype=np.int64)
    *_, err = fit_ridge_by_time(
        X[tr][:, genes], Y[tr], zeros[tr], 1, X[va][:, genes], Y[va], zeros[va], return_error=True
    )
    return err


@pytest.mark.parametrize(("kind", "expected"), [("sparse", "screen"), ("dense", "all")])
def test_auto_chooses_the_gene_set_with_the_lowest_validation_mse(kind, expected):
    mdata = _mdata(kind)
    model = _fit(mdata, linear_path_genes="auto")
    rec = model.linear_path_genes_
    assert rec["criterion"] == "validation_mse"
    n_genes = mdata["rna"].n_vars
    assert set(rec["errors"]) == {"all"} | {f"screen{k}" for k in (64, 256, 1024) if k < n_genes}
    assert rec["choice"].startswith(expected)
    assert rec["errors"][rec["choice"]] == min(rec["errors"].values())
    # each candidate's error is the validation MSE of a ridge on that gene set
    Y_tr = np.asarray(mdata["prot"].X, dtype=np.float64)[model.train_indices]
    for name, err in rec["errors"].items():
        genes = (
            np.arange(n_genes)
            if name == "all"
            else screen_genes(np.asarray(mdata["rna"].X), Y_tr, model.train_indices, int(name[6:]))
        )
        assert err == pytest.approx(_validation_mse(model, mdata, genes), rel=1e-4)
    # the chosen set: the recorded genes carry the weights, every other gene has zero weight
    W = model.module.linear_weight.numpy()
    outside = np.setdiff1d(np.arange(n_genes), rec["genes"])
    assert rec["genes"].size == (n_genes if rec["choice"] == "all" else int(rec["choice"][6:]))
    assert np.all(W[outside] == 0)
    assert np.abs(W[rec["genes"]]).sum(axis=1).min() > 0
    if kind == "sparse":
        assert set(range(12)) <= set(rec["genes"].tolist())  # the planted drivers are kept


def test_default_is_auto_and_all_and_screen_fit_one_gene_set():
    mdata = _mdata("sparse")
    default = _fit(mdata)
    assert default.linear_path_genes == "auto"
    assert len(default.linear_path_genes_["errors"]) == 3  # all, screen64, screen256 (400 genes)
    assert CrossmodalNet(mdata, preset="paper").linear_path_genes == "all"  # no linear path: ignored
    every = _fit(mdata, linear_path_genes="all")
    assert every.linear_path_genes_["choice"] == "all"
    assert list(every.linear_path_genes_["errors"]) == ["all"]
    assert (every.module.linear_weight.abs().sum(1) > 0).all()
    screen = _fit(mdata, linear_path_genes="screen")
    assert list(screen.linear_path_genes_["errors"]) == ["screen256"]
    assert (screen.module.linear_weight.abs().sum(1) > 0).sum() == 256
    assert "linear path (screen genes)" in repr(screen)


def test_auto_save_load_and_determinism(tmp_path):
    mdata = _mdata("sparse")
    model, model2 = _fit(mdata, linear_path_genes="auto"), _fit(mdata, linear_path_genes="auto")
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, model2.module.state_dict()[k], rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(model.linear_path_genes_["genes"], model2.linear_path_genes_["genes"])
    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", mdata)
    assert loaded.linear_path_genes == "auto"
    assert loaded.linear_path_genes_["choice"] == model.linear_path_genes_["choice"]
    np.testing.assert_array_equal(loaded.linear_path_genes_["genes"], model.linear_path_genes_["genes"])
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, loaded.module.state_dict()[k], rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(model.predict_protein().to_numpy(), loaded.predict_protein().to_numpy())


def test_bad_linear_path_genes_is_refused():
    mdata = _mdata("dense")
    before = mdata.copy()
    with pytest.raises(ValueError, match="linear_path_genes"):
        CrossmodalNet(mdata, linear_path_genes="screened")
    assert list(mdata["rna"].obs.columns) == list(before["rna"].obs.columns)
    np.testing.assert_array_equal(mdata["rna"].X, before["rna"].X)


def test_auto_without_varying_proteins_keeps_all_genes():
    mdata = _mdata("sparse")
    mdata["prot"].X = np.ones_like(mdata["prot"].X)
    mdata.update()
    model = _fit(mdata, linear_path_genes="auto")
    assert list(model.linear_path_genes_["errors"]) == ["all"]
    with pytest.raises(ValueError, match="constant"):
        _fit(mdata, linear_path_genes="screen")


def _coding_mdata(positions=(350, 351, 352)) -> MuData:
    """The sparse planted set with proteins named CD19 and CD3, whose coding genes (Cd19; CD3E, CD3D) are noise genes."""
    mdata = _mdata("sparse")
    names = [f"g{i}" for i in range(400)]
    for position, name in zip(positions, ("Cd19", "CD3E", "CD3D"), strict=True):  # mouse case matches too
        names[position] = name
    mdata["rna"].var_names = names
    mdata["prot"].var_names = ["CD19", "CD3", "p2", "p3", "p4", "p5"]
    mdata.update()
    CrossmodalNet.setup_mudata(mdata)
    return mdata


def test_coding_genes_join_every_screened_gene_set():
    # three noise genes the screen leaves out (gene names do not change the screen)
    screened = _fit(_mdata("sparse"), linear_path_genes="screen").linear_path_genes_["genes"]
    coding = np.setdiff1d(np.arange(400), screened)[-3:]
    mdata = _coding_mdata(tuple(coding))
    with_coding = _fit(mdata, linear_path_genes="screen")
    assert with_coding.linear_path_coding_genes is True  # default preset
    np.testing.assert_array_equal(with_coding.linear_path_genes_["coding_genes"], coding)
    without = _fit(mdata, linear_path_genes="screen", linear_path_coding_genes=False)
    assert without.linear_path_genes_["coding_genes"].size == 0
    np.testing.assert_array_equal(without.linear_path_genes_["genes"], screened)
    # the chosen set is exactly the screen plus the coding genes, whose linear weights are fitted
    np.testing.assert_array_equal(with_coding.linear_path_genes_["genes"], np.union1d(screened, coding))
    assert np.abs(with_coding.module.linear_weight.detach().numpy()[coding]).sum() > 0
    assert np.abs(without.module.linear_weight.detach().numpy()[coding]).sum() == 0
    # "auto" adds them to each screened candidate; "all" is unchanged
    auto = _fit(mdata)
    assert auto.linear_path_genes_["choice"].startswith("screen")
    assert np.isin(coding, auto.linear_path_genes_["genes"]).all()


def test_coding_genes_setting_is_checked_and_saved(tmp_path):
    mdata = _coding_mdata()
    with pytest.raises(ValueError, match="`linear_path_coding_genes` must be True or False"):
        CrossmodalNet(mdata, linear_path_coding_genes="yes")
    assert CrossmodalNet(mdata, preset="paper").linear_path_coding_genes is False
    model = _fit(mdata, linear_path_coding_genes=False)
    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", mdata)
    assert loaded.linear_path_coding_genes is False


def test_auto_screens_the_genes_once(monkeypatch):
    """The screened candidate sets of ``"auto"`` are prefixes of one screen, not one screen each."""
    import crossmodalnet.model._fitting as fitting

    calls = []
    original = fitting.screen_ranking

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fitting, "screen_ranking", counted)
    model = _fit(_mdata("sparse"), linear_path_genes="auto")
    assert len(calls) == 1
    assert set(model.linear_path_genes_["errors"]) == {"all", "screen64", "screen256"}


def test_coding_genes_are_not_recorded_without_a_screened_set():
    model = _fit(_coding_mdata(), linear_path_genes="all")
    assert model.linear_path_genes_["choice"] == "all"
    assert model.linear_path_genes_["coding_genes"].size == 0
