"""Issue 14 item 1: a second ``train()`` continues from the current weights and never ends worse."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import numpy as np
import scvi

from crossmodalnet.model import CrossmodalNet

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


class _ModeRecorder(pl.Callback):
    """Record whether every submodule is in training mode when a fit starts."""

    def __init__(self):
        self.all_training: list[bool] = []

    def on_train_start(self, trainer, pl_module):
        self.all_training.append(all(m.training for m in pl_module.module.modules()))


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
