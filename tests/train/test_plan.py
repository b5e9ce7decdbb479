"""The training plan's steps on hand-made batches: adversarial gradient, schedule, GradNorm state, best epoch."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet.module import CrossmodalModule
from crossmodalnet.train import FaderGradNormPlan, RestoreBestWeights, fader_loss, nlc_loss

N_CELLS, N_GENES, N_PROTEINS, N_TIMES = 48, 12, 5, 3


def _module(lambda_dis: float = 0.5) -> CrossmodalModule:
    torch.manual_seed(0)
    # no dropout: two forward passes over the same batch give the same graph
    return CrossmodalModule(
        N_GENES,
        N_PROTEINS,
        [N_TIMES, 1],
        n_latent=8,
        dropout_rate=0.0,
        n_hidden_discriminator=16,
        lambda_dis=lambda_dis,
    )


def _batch(seed: int, n_times: int = N_TIMES) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(N_CELLS) % n_times
    x = torch.rand(N_CELLS, N_GENES, generator=g)
    x[:, 0] += 2.0 * time  # a planted time effect the discriminator can read from z
    y = x[:, :N_PROTEINS] + 0.1 * torch.randn(N_CELLS, N_PROTEINS, generator=g)
    return {
        REGISTRY_KEYS.X_KEY: x,
        REGISTRY_KEYS.PROTEIN_KEY: y,
        REGISTRY_KEYS.TIME_KEY: time.reshape(-1, 1).float(),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(N_CELLS, 1),
    }


class _Recorder:
    """Stands in for the Lightning trainer around a plan: hands out its optimisers and records steps and logs."""

    def __init__(self, plan: FaderGradNormPlan):
        self.optimizers = plan.configure_optimizers()
        self.steps: list[tuple[int, str]] = []
        self.logs: list[dict[str, float]] = [{}]
        for name, opt in zip(("net", "dis", "w"), self.optimizers, strict=True):
            opt.step = self._counting(opt.step, name, plan)
        plan.optimizers = lambda: self.optimizers
        plan.log = lambda name, value, **kwargs: self.logs[-1].__setitem__(name, float(value))

    def _counting(self, step, name: str, plan: FaderGradNormPlan):
        def wrapped(*args, **kwargs):
            self.steps.append((plan.batch_count, name))
            return step(*args, **kwargs)

        return wrapped


def _reference_gradients(module: CrossmodalModule, batch: dict[str, torch.Tensor], *, lambda_dis: float):
    """Gradient of ``w1·NLC + w2·(MSE − λ·CE)`` on the network parameters, computed independently of the plan."""
    module = copy.deepcopy(module)
    module.train()
    z = module.inference(batch[REGISTRY_KEYS.X_KEY])["z"]
    pred = module.generative(z, module.covariate_embedding_from_tensors(batch))["protein_scaled"]
    target = batch[REGISTRY_KEYS.PROTEIN_KEY]
    time = batch[REGISTRY_KEYS.TIME_KEY].reshape(-1).long()
    fader, _, _ = fader_loss(
        pred, target, disc_logits=[module.discriminators[0](z)], disc_targets=[time], lambda_dis=lambda_dis
    )
    w = module.loss_weights.detach()
    total = w[0] * nlc_loss(pred, target) + w[1] * fader
    return torch.autograd.grad(total, module.network_parameters(), allow_unused=True)


def test_generator_step_trains_encoder_against_discriminator():
    module = _module(lambda_dis=0.5)
    with torch.no_grad():
        module.loss_weights.copy_(torch.tensor([0.7, 1.3]))
    batch = _batch(0)
    expected = _reference_gradients(module, batch, lambda_dis=0.5)
    without_adversary = _reference_gradients(module, batch, lambda_dis=0.0)
    plan = FaderGradNormPlan(module, learning_step=3)
    _Recorder(plan)
    plan._generator_step(batch, module.adversarial_covariates)

    first = module.encoder.first_layer.weight
    i_first = next(i for i, p in enumerate(module.network_parameters()) if p is first)
    # the adversarial term is a sizeable part of the encoder's gradient on this batch ...
    adversarial = expected[i_first] - without_adversary[i_first]
    assert adversarial.norm() > 0.05 * expected[i_first].norm()
    # ... and the plan's gradient holds it: every network parameter gets exactly w1·∇NLC + w2·∇Fader
    for p, g in zip(module.network_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6, msg=lambda m: f"gradient of w1·NLC + w2·Fader: {m}")


def test_discriminator_updates_every_learning_step_batches():
    module = _module()
    plan = FaderGradNormPlan(module, learning_step=3)
    rec = _Recorder(plan)
    time_dis = module.discriminators[0]  # the batch covariate has one category: no discriminator trained
    dis_before = copy.deepcopy(time_dis.state_dict())
    for k in range(9):
        plan.training_step(_batch(k), k)
    dis_steps = [b for b, name in rec.steps if name == "dis"]
    net_steps = [b for b, name in rec.steps if name == "net"]
    assert dis_steps == [3, 6, 9], "discriminator optimiser steps (batch numbers)"
    assert net_steps == [1, 2, 4, 5, 7, 8], "encoder/decoder optimiser steps (batch numbers)"
    assert [b for b, name in rec.steps if name == "w"] == net_steps
    assert all(not torch.equal(v, time_dis.state_dict()[k]) for k, v in dis_before.items())


def test_discriminator_schedule_without_adversarial_covariate():
    module = CrossmodalModule(N_GENES, N_PROTEINS, [1, 1], n_latent=8, dropout_rate=0.0)
    plan = FaderGradNormPlan(module, learning_step=3)
    rec = _Recorder(plan)
    for k in range(4):
        plan.training_step(_batch(k, n_times=1), k)
    # one time point: no discriminator, so every batch trains the network
    assert [b for b, name in rec.steps if name == "net"] == [1, 2, 3, 4]
    assert not [b for b, name in rec.steps if name == "dis"]


def test_gradnorm_initial_losses_are_set_once():
    module = _module()
    assert module.initial_losses.tolist() == [0.0, 0.0]
    plan = FaderGradNormPlan(module, learning_step=0)
    rec = _Recorder(plan)
    plan.training_step(_batch(0), 0)
    first = [rec.logs[-1]["nlc_train"], rec.logs[-1]["mse_train"]]
    rec.logs.append({})
    plan.training_step(_batch(1), 1)
    second = [rec.logs[-1]["nlc_train"], rec.logs[-1]["mse_train"]]
    # the two steps' losses differ, so the check below tells "set once" from "reset every step"
    assert abs(second[0] - first[0]) > 1e-3
    assert abs(second[1] - first[1]) > 1e-3
    np.testing.assert_allclose(
        module.initial_losses.numpy(), first, rtol=1e-6, err_msg="initial_losses must stay those of the first step"
    )


def _restore_run(scores, *, sanity_first: bool = False):
    """Drive RestoreBestWeights through epochs whose weights are filled with the epoch number."""
    callback = RestoreBestWeights(monitor="score", mode="max")
    pl_module = SimpleNamespace(module=torch.nn.Linear(2, 2))
    if sanity_first:
        trainer = SimpleNamespace(sanity_checking=True, callback_metrics={"score": torch.tensor(99.0)}, current_epoch=0)
        callback.on_validation_end(trainer, pl_module)
    for epoch, score in enumerate(scores):
        with torch.no_grad():
            for p in pl_module.module.parameters():
                p.fill_(float(epoch))
        trainer = SimpleNamespace(
            sanity_checking=False, callback_metrics={"score": torch.tensor(score)}, current_epoch=epoch
        )
        callback.on_validation_end(trainer, pl_module)
    callback.on_train_end(trainer, pl_module)
    return callback, pl_module.module


def test_restore_best_weights_restores_best_epoch():
    callback, module = _restore_run([0.2, 0.9, 0.5, float("nan"), 0.6], sanity_first=True)
    assert callback.best_epoch == 1
    assert callback.best_score == pytest.approx(0.9)
    for p in module.parameters():
        assert torch.equal(p.detach(), torch.full_like(p, 1.0)), "weights of the best epoch (1) restored"


def test_module_loss_is_the_weighted_objective():
    """``CrossmodalModule.loss`` (scvi-tools' ``module(tensors)``; the plan computes its own terms) by hand."""
    module = _module(lambda_dis=0.5)
    with torch.no_grad():
        module.loss_weights.copy_(torch.tensor([0.7, 1.3]))
    module.eval()
    batch = _batch(0)
    inference, generative, out = module(batch)
    z = inference["z"]
    pred = generative["protein_scaled"]
    target = batch[REGISTRY_KEYS.PROTEIN_KEY]
    ce = torch.nn.functional.cross_entropy(
        module.discriminators[0](z), batch[REGISTRY_KEYS.TIME_KEY].reshape(-1).long()
    )
    mse = torch.mean((pred - target) ** 2)
    nlc = nlc_loss(pred, target)
    torch.testing.assert_close(out.loss, 0.7 * nlc + 1.3 * (mse - 0.5 * ce))
    torch.testing.assert_close(out.extra_metrics["discriminator_ce"], ce)
    torch.testing.assert_close(out.extra_metrics["mse"], mse)
    assert ce.item() > 0.1  # the adversarial term counts
