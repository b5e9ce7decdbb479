"""The default preset's large-reference settings: screened network input and the learning-rate schedule."""

from __future__ import annotations

import anndata as ad
import lightning.pytorch as pl
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from crossmodalnet.model import CrossmodalNet, _callbacks, _presets
from crossmodalnet.model._presets import (
    LARGE_REFERENCE_CELLS,
    LARGE_REFERENCE_LINEAR_GENES,
    LARGE_REFERENCE_MIN_GENES,
    LARGE_REFERENCE_TRAIN,
    TRAIN_PRESETS,
    WIDE_INPUT_CELLS,
    WIDE_INPUT_FEATURES,
    WIDE_INPUT_GENES,
    default_input_features,
    is_large_reference,
    linear_standin_genes,
    resolve_input_reduction,
    train_settings,
)
from crossmodalnet.train import AveragedWeights, FaderGradNormPlan

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "disentangle_epochs": 0}


def _registered(n_obs: int, n_genes: int) -> md.MuData:
    """A registered MuData of ``n_obs`` cells (sparse log-like RNA, 3 proteins, 2 time points); no training."""
    rng = np.random.default_rng(0)
    X = sp.random(n_obs, n_genes, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    obs_names = [f"c{i}" for i in range(n_obs)]
    rna = ad.AnnData(X, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    prot = ad.AnnData(
        rng.normal(size=(n_obs, 3)).astype(np.float32),
        obs=pd.DataFrame(index=obs_names),
        var=pd.DataFrame(index=["p0", "p1", "p2"]),
    )
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["time"] = np.arange(n_obs) % 2
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def test_rule():
    assert (LARGE_REFERENCE_CELLS, LARGE_REFERENCE_MIN_GENES) == (20_000, 1_024)
    assert is_large_reference("default", 20_000)
    assert not is_large_reference("default", 19_999)
    assert not is_large_reference("paper", 10**6)
    assert resolve_input_reduction("default", "auto", 20_000, 1_025) == "screen"
    assert resolve_input_reduction("default", "auto", 20_000, 1_024) is None
    assert resolve_input_reduction("default", "auto", 19_999, 20_000) is None
    assert resolve_input_reduction("paper", "auto", 10**6, 20_000) is None
    # an explicit choice is kept, whatever the size
    assert resolve_input_reduction("default", None, 10**6, 20_000) is None
    assert resolve_input_reduction("default", "svd", 100, 200) == "svd"
    large_settings = {
        "reduce_lr_on_plateau": True,
        "ema_decay": 0.999,
        "disentangle_tolerance": 0.002,
        "early_stopping_min_delta": 0.0005,
    }
    assert LARGE_REFERENCE_TRAIN == large_settings
    small, large = train_settings("default", 19_999), train_settings("default", 20_000)
    assert small == TRAIN_PRESETS["default"]
    keys = ("reduce_lr_on_plateau", "ema_decay", "disentangle_tolerance", "early_stopping_min_delta")
    assert tuple(small[k] for k in keys) == (False, 0.0, 0.01, 0.0)
    assert TRAIN_PRESETS["paper"]["ema_decay"] == 0.0
    assert large == {**TRAIN_PRESETS["default"], **large_settings}
    assert train_settings("paper", 10**6) == TRAIN_PRESETS["paper"]
    # the linear path's stand-in for all genes, when they are out of its closed form's reach
    assert LARGE_REFERENCE_LINEAR_GENES == 2_048
    assert linear_standin_genes("default", 20_000) == 2_048
    assert linear_standin_genes("default", 19_999) == 4_096
    assert linear_standin_genes("default", 20_000, limit=1_000) == 1_000
    assert linear_standin_genes("paper", 10**6) == 4_096
    # the networks' screened genes widen from WIDE_INPUT_CELLS, only where the preset chose the screen
    assert (WIDE_INPUT_CELLS, WIDE_INPUT_GENES, WIDE_INPUT_FEATURES) == (100_000, 10_000, 1_024)
    assert default_input_features("default", "screen", 100_000, 10_000, auto=True) == 1_024
    assert default_input_features("default", "screen", 99_999, 20_000, auto=True) == 256
    # 1,024 of 2,000 genes lost to 256 at 100,000 cells: a reference of few genes keeps 256
    assert default_input_features("default", "screen", 10**6, 9_999, auto=True) == 256
    assert default_input_features("default", "screen", 100_000, 20_000, auto=False) == 256
    assert default_input_features("paper", "screen", 10**6, 20_000, auto=True) == 256
    assert default_input_features("default", "svd", 10**6, 20_000, auto=True) == 256
    assert default_input_features("default", "hvg", 10**6, 20_000, auto=False) == 2_000
    assert default_input_features("default", None, 10**6, 20_000, auto=True) is None


@pytest.mark.parametrize(("n_obs", "expected"), [(LARGE_REFERENCE_CELLS, "screen"), (LARGE_REFERENCE_CELLS - 1, None)])
def test_the_registered_cells_decide_the_networks_input(n_obs, expected, monkeypatch):
    mdata = _registered(n_obs, LARGE_REFERENCE_MIN_GENES + 1)
    model = CrossmodalNet(mdata, n_latent=8)
    assert model.module.input_reduction == expected
    assert model.module.n_features == (256 if expected else LARGE_REFERENCE_MIN_GENES + 1)
    # from WIDE_INPUT_CELLS registered cells and WIDE_INPUT_GENES genes, the screen keeps WIDE_INPUT_FEATURES genes
    monkeypatch.setattr(_presets, "WIDE_INPUT_CELLS", n_obs)
    assert CrossmodalNet(mdata, n_latent=8).module.n_features == (256 if expected else LARGE_REFERENCE_MIN_GENES + 1)
    monkeypatch.setattr(_presets, "WIDE_INPUT_GENES", LARGE_REFERENCE_MIN_GENES + 1)
    wide = CrossmodalNet(mdata, n_latent=8)
    assert wide.module.n_features == (WIDE_INPUT_FEATURES if expected else LARGE_REFERENCE_MIN_GENES + 1)
    assert ("input screen → 1024 features" in repr(wide)) == (expected == "screen")
    assert CrossmodalNet(mdata, n_latent=8, input_reduction="screen").module.n_features == 256  # asked for: 256
    monkeypatch.undo()
    assert model.init_params_["non_kwargs"]["input_reduction"] == expected  # saved resolved, never "auto"
    assert (("input screen → 256 features") in repr(model)) == (expected == "screen")
    # the paper preset and an explicit None keep every gene
    assert CrossmodalNet(mdata, n_latent=8, preset="paper").module.input_reduction is None
    assert CrossmodalNet(mdata, n_latent=8, input_reduction=None).module.input_reduction is None


@pytest.fixture
def setup_mdata(norm_mdata):
    """A registered copy of ``norm_mdata`` (200 cells, 60 genes: below the large-reference bound)."""
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


@pytest.fixture
def small_large_reference(setup_mdata, monkeypatch):
    """``setup_mdata``, with the large-reference bounds lowered below it."""
    monkeypatch.setattr(_presets, "LARGE_REFERENCE_CELLS", 100)
    monkeypatch.setattr(_presets, "LARGE_REFERENCE_MIN_GENES", 40)
    monkeypatch.setitem(_presets.N_INPUT_FEATURES, "screen", 16)
    return setup_mdata


@pytest.mark.parametrize("wide", [False, True])
def test_large_reference_trains_with_the_schedule_and_reloads(small_large_reference, tmp_path, monkeypatch, wide):
    if wide:  # the reference is also past the bound of the wider screen
        monkeypatch.setattr(_presets, "WIDE_INPUT_CELLS", 150)
        monkeypatch.setattr(_presets, "WIDE_INPUT_GENES", 50)
        monkeypatch.setattr(_presets, "WIDE_INPUT_FEATURES", 24)
    model = CrossmodalNet(small_large_reference, n_latent=8)
    assert (model.module.input_reduction, model.module.n_features) == ("screen", 24 if wide else 16)
    assert model.init_params_["non_kwargs"]["n_input_features"] == (24 if wide else 16)  # saved resolved
    # without the weight average, which barely moves in the 120 steps of this 200-cell set
    model.train(
        max_epochs=40, batch_size=64, early_stopping_patience=30, ema_decay=0.0, **{**TRAIN, "disentangle_epochs": 2}
    )
    assert model.split_["disentangle"]["tolerance"] == 0.002  # the large reference's tolerance
    lr = model.history_["lr"]["lr"].to_numpy()
    assert lr[0] == pytest.approx(1e-3)
    ratios = lr[1:] / lr[:-1]
    assert np.all(np.isclose(ratios, 1.0) | np.isclose(ratios, 0.3))  # lr_factor 0.3, never raised
    assert lr[-1] < 1e-3  # 40 epochs on 200 cells plateau
    # the resolved choice is saved: the reloaded model is the same model
    model.save(tmp_path / "m")
    monkeypatch.undo()  # the bounds back to their values, which this 200-cell reference is below
    loaded = CrossmodalNet.load(tmp_path / "m", small_large_reference)
    assert (loaded.module.input_reduction, loaded.module.n_features) == ("screen", 24 if wide else 16)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    np.testing.assert_array_equal(model.predict_protein().to_numpy(), loaded.predict_protein().to_numpy())


class _Callbacks(pl.Callback):
    """The trainer's callbacks, recorded when training starts."""

    def on_train_start(self, trainer, _pl_module):
        self.callbacks = list(trainer.callbacks)


def _averages(model) -> list[float]:
    """Decay and update interval of the weight averages the model's next one-epoch ``train()`` runs with."""
    recorder = _Callbacks()
    model.train(max_epochs=1, batch_size=64, callbacks=[recorder], **TRAIN)
    return [(c.decay, c.every_n_steps) for c in recorder.callbacks if isinstance(c, AveragedWeights)]


def test_weight_average_from_the_bound_with_the_default_preset(small_large_reference):
    assert _averages(CrossmodalNet(small_large_reference, n_latent=8)) == [(0.999, 4)]
    assert _averages(CrossmodalNet(small_large_reference, n_latent=8, preset="paper")) == []


def test_no_weight_average_below_the_bound(setup_mdata):
    assert _averages(CrossmodalNet(setup_mdata, n_latent=8)) == []


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_no_schedule_below_the_bound_or_with_the_paper_preset(setup_mdata, preset):
    mdata = setup_mdata
    model = CrossmodalNet(mdata, n_latent=8, preset=preset)
    model.train(max_epochs=3, batch_size=64, **{**TRAIN, "disentangle_epochs": 1})
    assert "lr" not in model.history_
    assert model.split_["disentangle"]["tolerance"] == 0.01
    # asked for explicitly, it runs
    model = CrossmodalNet(mdata, n_latent=8, preset=preset)
    model.train(max_epochs=3, batch_size=64, reduce_lr_on_plateau=True, **TRAIN)
    assert model.history_["lr"]["lr"].iloc[0] == pytest.approx(1e-3)


def test_schedule_follows_the_early_stopping_monitor_and_its_plan_settings(setup_mdata):
    mdata = setup_mdata
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(
        max_epochs=25,
        batch_size=64,
        reduce_lr_on_plateau=True,
        early_stopping_patience=20,
        early_stopping_monitor="pearson_cell_validation",
        plan_kwargs={"lr_factor": 0.5, "lr_patience": 0, "lr_min": 2e-4},
        **TRAIN,
    )
    lr = model.history_["lr"]["lr"].to_numpy()
    assert lr.min() == pytest.approx(2e-4)  # the floor is reached with a patience of 0
    assert set(np.round(lr / 1e-3, 6)) <= {1.0, 0.5, 0.25, 0.2}
    # with a patience of 0, every epoch that does not beat the best per-cell r so far lowers the rate
    r = model.history_["pearson_cell_validation"]["pearson_cell_validation"].to_numpy()
    best = np.maximum.accumulate(r)
    for e in range(1, len(r)):
        expected = max(lr[e - 1] * 0.5, 2e-4) if r[e] <= best[e - 1] else lr[e - 1]
        assert lr[e] == pytest.approx(expected), e


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reduce_lr_on_plateau": "yes"}, "reduce_lr_on_plateau"),
        ({"lr_factor": 1.0}, "lr_factor"),
        ({"lr_factor": 0}, "lr_factor"),
        ({"lr_patience": -1}, "lr_patience"),
        ({"lr_patience": 1.5}, "lr_patience"),
        ({"lr_min": -1e-5}, "lr_min"),
        ({"lr_scheduler_metric": "elbo_validation"}, "lr_scheduler_metric"),
    ],
)
def test_bad_schedule_settings_are_refused_before_training(setup_mdata, kwargs, match):
    mdata = setup_mdata
    model = CrossmodalNet(mdata, n_latent=8)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.train(max_epochs=1, plan_kwargs=kwargs, **TRAIN)
    assert not model.is_trained_
    assert model.split_ == {}
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match=match):
        FaderGradNormPlan(model.module, **kwargs)


def test_bad_input_reduction_is_refused(setup_mdata):
    mdata = setup_mdata
    with pytest.raises(ValueError, match="input_reduction"):
        CrossmodalNet(mdata, input_reduction="Auto")


def _epochs_trained(model: CrossmodalNet) -> np.ndarray:
    """Validation per-protein r of every epoch ``model`` trained."""
    return model.history_["pearson_protein_validation"]["pearson_protein_validation"].to_numpy()


def _train_with(mdata: md.MuData, **train_kwargs) -> CrossmodalNet:
    """A seeded 8-latent model of ``mdata`` trained for at most 8 epochs with early-stopping patience 2."""
    import scvi

    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=8, batch_size=64, early_stopping_patience=2, **TRAIN, **train_kwargs)
    return model


def _given_min_deltas(monkeypatch) -> list[float]:
    """The ``min_delta`` of every early-stopping callback ``train`` builds from now on, in order."""
    given = []
    init = _callbacks._EarlyStopping.__init__

    def spy(self, **kwargs):
        given.append(kwargs["min_delta"])
        init(self, **kwargs)

    monkeypatch.setattr(_callbacks._EarlyStopping, "__init__", spy)
    return given


def test_early_stopping_counts_only_gains_above_its_minimum(setup_mdata, monkeypatch):
    given = _given_min_deltas(monkeypatch)
    full = _epochs_trained(_train_with(setup_mdata, early_stopping=False))
    assert full.size == 8
    # no rise of validation r can reach 1: the first epoch sets the best, two more end training
    model = _train_with(setup_mdata, early_stopping_min_delta=1.0)
    with_min = _epochs_trained(model)
    assert with_min.size == 3
    # the minimum decides when training ends, not what an epoch learns; the best epoch is still kept
    np.testing.assert_array_equal(with_min, full[:3])
    assert model.split_["best_epoch"] in (-1, int(np.argmax(with_min)))
    assert model.split_["best_pearson_protein_validation"] >= with_min.max()
    # below the large-reference bound the preset counts every gain
    _train_with(setup_mdata)
    assert given == [1.0, 0.0]


def test_a_large_reference_takes_the_presets_minimum_gain(small_large_reference, monkeypatch):
    given = _given_min_deltas(monkeypatch)
    _train_with(small_large_reference)
    _train_with(small_large_reference, early_stopping_min_delta=0.0)  # an explicit value wins
    assert given == [0.0005, 0.0]
    monkeypatch.setitem(_presets.LARGE_REFERENCE_TRAIN, "early_stopping_min_delta", 1.0)
    assert _epochs_trained(_train_with(small_large_reference)).size == 3


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), "0.1", True, [0.1]])
def test_a_bad_minimum_gain_is_refused_before_training(setup_mdata, bad):
    mdata = setup_mdata
    model = CrossmodalNet(mdata, n_latent=8)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    obs_before = mdata.obs.copy()
    with pytest.raises(ValueError, match="`early_stopping_min_delta` must be a finite number >= 0"):
        model.train(max_epochs=1, early_stopping_min_delta=bad, **TRAIN)
    assert not model.is_trained_
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    pd.testing.assert_frame_equal(mdata.obs, obs_before)
