"""Issue 14 item 1: a second ``train()`` continues from the current weights and never ends worse."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import scvi
import torch

from crossmodalnet.model import CrossmodalNet

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


class _ModeRecorder(pl.Callback):
    """Record whether every submodule is in training mode when a fit starts."""

    def __init__(self):
        self.all_training: list[bool] = []

    def on_train_start(self, trainer, pl_module):
        self.all_training.append(all(m.training for m in pl_module.module.modules()))


class _StartRecorder(pl.Callback):
    """Record the module's state when a fit starts, before any optimiser step."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _validation_r(model) -> float:
    return model._validation_score(np.asarray(model.validation_indices), "pearson_protein_validation")


def test_second_train_continues_in_train_mode_on_the_same_split(norm_mdata, caplog):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(max_epochs=3, **TRAIN)
    split = [np.sort(np.asarray(a)) for a in (model.train_indices, model.validation_indices, model.test_indices)]
    recorder = _ModeRecorder()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        # another split seed: continued training must not draw a new split (it would train on test cells)
        model.train(max_epochs=2, split_seed=123, callbacks=[recorder], **TRAIN)
    assert recorder.all_training == [True]
    assert not [w for w in caught if "eval mode" in str(w.message)]
    again = [np.sort(np.asarray(a)) for a in (model.train_indices, model.validation_indices, model.test_indices)]
    for a, b in zip(split, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert "keeps the model's split" in caplog.text
    assert "Continuing training from the current weights" in caplog.text
    # the history grows: the second call continued the first
    assert len(model.history["mse_train"]) == 5
    assert not model.module.training


def test_continued_training_does_not_lower_validation_r(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(max_epochs=30, early_stopping_patience=5, **TRAIN)
    before = _validation_r(model)
    gradnorm_start = model.module.initial_losses.clone()
    # a learning rate 30x the default throws the weights far from the trained optimum
    model.train(max_epochs=3, lr=3e-2, **TRAIN)
    after = _validation_r(model)
    assert after >= before - 1e-6, (before, after)
    # GradNorm keeps its reference losses from the first call (loss ratios stay comparable)
    np.testing.assert_array_equal(model.module.initial_losses.numpy(), gradnorm_start.numpy())
    assert model.split_["best_epoch"] >= -1


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_second_train_starts_from_the_current_weights(norm_mdata, preset):
    """The first step of a second ``train()`` sees exactly the weights the first call ended with."""
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, preset=preset, n_latent=16)
    model.train(max_epochs=3, disentangle_epochs=0, **TRAIN)
    trained = _state(model)
    recorder = _StartRecorder()
    model.train(max_epochs=1, disentangle_epochs=0, callbacks=[recorder], **TRAIN)
    assert recorder.state is not None
    assert recorder.state.keys() == trained.keys()
    for key, value in trained.items():
        torch.testing.assert_close(recorder.state[key], value, rtol=0, atol=0, msg=f"{key} changed before training")


def test_paper_preset_second_train_keeps_its_start_when_no_epoch_beats_it(norm_mdata):
    """Without a linear path too, a continued call that only gets worse ends with the weights it started from."""
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, preset="paper", n_latent=16)
    assert not model.module.linear_path
    model.train(max_epochs=12, lr=1e-2, validation_size=0.15, **TRAIN)
    before = _validation_r(model)
    assert before > 0.2  # the networks learned something that a destructive call can lose
    start = _state(model)
    n_epochs = len(model.history["pearson_protein_validation"])
    # lr=1 wrecks the networks: every epoch of this call scores below the start
    model.train(max_epochs=2, lr=1.0, **TRAIN)
    new_epochs = model.history["pearson_protein_validation"].to_numpy().ravel()[n_epochs:]
    assert new_epochs.size == 2
    assert not (new_epochs > before).any(), (before, new_epochs)
    assert model.split_["best_epoch"] == -1
    assert model.split_["best_pearson_protein_validation"] == pytest.approx(before, abs=1e-6)
    assert _validation_r(model) == pytest.approx(before, abs=1e-6)
    for key, value in start.items():
        torch.testing.assert_close(model.module.state_dict()[key], value, rtol=0, atol=0, msg=f"{key} not restored")
