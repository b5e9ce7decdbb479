"""``AveragedWeights``: an exponential moving average of the weights, validated and kept in their place."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import scvi
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._presets import EMA_EVERY_N_STEPS
from crossmodalnet.train import AveragedWeights, RestoreBestWeights

pytestmark = [
    pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]
TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "disentangle_epochs": 0}
DECAY = 0.5


class _Toy(pl.LightningModule):
    """A linear regression trained by SGD; validation logs minus the loss as ``score``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.module = torch.nn.Linear(3, 1)

    def training_step(self, batch, _idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.module(x), y)

    def validation_step(self, batch, _idx):
        x, y = batch
        self.log("score", -torch.nn.functional.mse_loss(self.module(x), y), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Recorder(pl.Callback):
    """The weights after each training step, at each validation's end, and at the start of the next step."""

    def __init__(self):
        self.trained, self.validated, self.resumed = [], [], []

    @staticmethod
    def _weights(pl_module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).clone() for p in pl_module.module.parameters()])

    def on_train_batch_start(self, _trainer, pl_module, _batch, batch_idx):
        if batch_idx == 0 and self.trained:
            self.resumed.append(self._weights(pl_module))

    def on_train_batch_end(self, _trainer, pl_module, *_args):
        self.trained.append(self._weights(pl_module))

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append(self._weights(pl_module))


def _fit(callbacks, *, validate: bool = True, epochs: int = 3) -> _Toy:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=gen)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    toy = _Toy()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1.0 if validate else 0,
    )
    trainer.fit(toy, data, data if validate else None)
    return toy


def _ema(trained: list[torch.Tensor], every: int = 1) -> list[torch.Tensor]:
    """The average after each step: updated after steps 1, 1 + every, 1 + 2 every, ... with DECAY ** every."""
    average, out = trained[0], [trained[0]]
    for step, w in enumerate(trained[1:], start=1):
        if step % every == 0:
            average = DECAY**every * average + (1 - DECAY**every) * w
        out.append(average)
    return out


def test_validation_sees_the_average_and_training_resumes_from_the_trained_weights():
    recorder = _Recorder()
    _fit([recorder, AveragedWeights(DECAY)])
    steps = len(recorder.trained) // 3  # 4 steps per epoch
    averages = _ema(recorder.trained)
    assert len(recorder.validated) == 3
    for epoch, validated in enumerate(recorder.validated):
        torch.testing.assert_close(validated, averages[(epoch + 1) * steps - 1])
        assert not torch.allclose(validated, recorder.trained[(epoch + 1) * steps - 1])
    # each epoch after the first starts from the last trained weights, not from their average
    for epoch, resumed in enumerate(recorder.resumed):
        torch.testing.assert_close(resumed, recorder.trained[(epoch + 1) * steps - 1])


def test_an_update_every_n_steps_takes_the_decay_of_n_steps():
    recorder = _Recorder()
    _fit([recorder, AveragedWeights(DECAY, every_n_steps=3)])
    averages = _ema(recorder.trained, every=3)
    for epoch, validated in enumerate(recorder.validated):
        torch.testing.assert_close(validated, averages[(epoch + 1) * 4 - 1])
    assert not torch.allclose(recorder.validated[-1], _ema(recorder.trained)[-1])


def test_restoration_keeps_the_validated_average():
    recorder, restore = _Recorder(), RestoreBestWeights(monitor="score")
    toy = _fit([restore, recorder, AveragedWeights(DECAY)])
    kept = _Recorder._weights(toy)
    torch.testing.assert_close(kept, recorder.validated[restore.best_epoch])
    assert not any(torch.allclose(kept, w) for w in recorder.trained)


def test_without_validation_the_model_ends_with_the_average():
    recorder = _Recorder()
    toy = _fit([recorder, AveragedWeights(DECAY)], validate=False)
    torch.testing.assert_close(_Recorder._weights(toy), _ema(recorder.trained)[-1])


@pytest.fixture
def setup_mdata(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def test_a_model_keeps_the_best_validated_average_deterministically(setup_mdata):
    runs = []
    for decay in (0.9, 0.9, 0.0):
        scvi.settings.seed = 0
        model = CrossmodalNet(setup_mdata, n_latent=8, preset="paper")  # no ridge start to keep
        model.train(max_epochs=6, batch_size=64, ema_decay=decay, **TRAIN)
        runs.append(model)
    averaged, again, plain = runs
    val = np.asarray(averaged.validation_indices)
    # the kept weights are the ones whose validation score was recorded as the best
    score = averaged._validation_score(val, "pearson_protein_validation")
    assert score == pytest.approx(averaged.split_["best_pearson_protein_validation"], abs=1e-6)
    history = averaged.history_["pearson_protein_validation"]["pearson_protein_validation"].to_numpy()
    assert history[averaged.split_["best_epoch"]] == pytest.approx(score, abs=1e-6)
    # same seed, same data: the same model; without averaging, other weights
    for key, value in _state(averaged).items():
        assert torch.equal(value, _state(again)[key]), key
    assert any(not torch.equal(v, _state(plain)[k]) for k, v in _state(averaged).items())


class _OptimizerSteps(pl.Callback):
    """Lightning's optimiser step count after each mini-batch."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, *_args):
        self.steps.append(trainer.global_step)


def test_a_model_updates_its_average_every_4_mini_batches(monkeypatch):
    import crossmodalnet as cmn

    mdata = cmn.datasets.synthetic_cite(n_obs=1000, n_genes=100, n_proteins=10)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    calls, steps = [], _OptimizerSteps()
    update = AveragedModel.update_parameters
    monkeypatch.setattr(AveragedModel, "update_parameters", lambda self, model: calls.append(1) or update(self, model))
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=2, batch_size=64, ema_decay=0.9, callbacks=[steps], **TRAIN)
    # the training plan takes one or two optimiser steps per mini-batch (Lightning's step count)...
    assert set(np.diff(steps.steps)) == {1, 2}
    # ...and the average is updated after mini-batches 1, 5, 9, ...
    assert EMA_EVERY_N_STEPS == 4
    assert len(calls) == int(np.ceil(len(steps.steps) / 4))


@pytest.mark.parametrize("decay", [1.0, -0.1, float("nan"), "0.9", True])
def test_bad_decay_is_refused_before_training(setup_mdata, decay):
    model = CrossmodalNet(setup_mdata, n_latent=8)
    with pytest.raises(ValueError, match=r"`ema_decay` must be a number in \[0, 1\)"):
        model.train(max_epochs=1, ema_decay=decay, **TRAIN)
    assert not model.is_trained_
