from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import crossmodalnet.nn
import crossmodalnet.train
from crossmodalnet.nn import (
    adversarial_cross_entropy,
    discriminator_loss,
    fader_loss,
    group_lasso,
    nlc_loss,
    pearson_per_row,
)


def test_pearson_per_row_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    b = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    expected = [np.corrcoef(a[i].numpy(), b[i].numpy())[0, 1] for i in range(5)]
    np.testing.assert_allclose(pearson_per_row(a, b).numpy(), expected, rtol=1e-6)


def test_nlc_perfect_and_anti_correlation():
    y = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert nlc_loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    # r = -1 → (r+1)/2 = 0 → clamped at eps → -log(eps)
    assert nlc_loss(-y, y, eps=1e-6).item() == pytest.approx(-math.log(1e-6), rel=1e-4)
    # uncorrelated (r = 0) → log 2
    a = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    b = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    assert nlc_loss(a, b).item() == pytest.approx(math.log(2), rel=1e-6)


def test_nlc_constant_row_is_finite_with_finite_gradient():
    pred = torch.ones(3, 5, requires_grad=True)
    target = torch.randn(3, 5)
    loss = nlc_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    assert torch.isfinite(pred.grad).all()


def test_nlc_is_mean_over_cells():
    y = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    p = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    expected = (0.0 + -math.log(1e-6)) / 2
    assert nlc_loss(p, y, eps=1e-6).item() == pytest.approx(expected, rel=1e-4)


def test_fader_loss_subtracts_lambda_ce():
    pred = torch.zeros(4, 3)
    target = torch.ones(4, 3)
    logits = [torch.zeros(4, 2)]  # uniform → CE = log 2
    codes = [torch.tensor([0, 1, 0, 1])]
    fader, mse, ce = fader_loss(pred, target, disc_logits=logits, disc_targets=codes, lambda_dis=0.5)
    assert mse.item() == pytest.approx(1.0)
    assert ce.item() == pytest.approx(math.log(2))
    assert fader.item() == pytest.approx(1.0 - 0.5 * math.log(2))
    # no discriminator → the Fader loss is the MSE
    fader2, _, ce2 = fader_loss(pred, target)
    assert fader2.item() == pytest.approx(1.0)
    assert ce2.item() == 0.0


def test_fader_loss_from_per_covariate_cross_entropies():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    logits = [torch.randn(6, 3, generator=gen), torch.randn(6, 2, generator=gen)]
    codes = [torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 1])]
    per_cov = adversarial_cross_entropy(logits, codes)
    assert len(per_cov) == 2
    for term, lg, c in zip(per_cov, logits, codes, strict=True):
        # cross-entropy by hand: mean of -log softmax at the true class
        expected = -torch.log_softmax(lg, dim=1)[torch.arange(6), c].mean()
        torch.testing.assert_close(term, expected)
    from_ce = fader_loss(pred, target, disc_ce=per_cov, lambda_dis=0.7)
    from_logits = fader_loss(pred, target, disc_logits=logits, disc_targets=codes, lambda_dis=0.7)
    for a, b in zip(from_ce, from_logits, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(from_ce[2], per_cov[0] + per_cov[1])
    torch.testing.assert_close(from_ce[0], from_ce[1] - 0.7 * (per_cov[0] + per_cov[1]))
    with pytest.raises(ValueError, match="either `disc_ce` or `disc_logits`"):
        fader_loss(pred, target, disc_ce=per_cov, disc_logits=logits, disc_targets=codes)


def test_train_reexports_the_loss_functions():
    # the documented `crossmodalnet.train` names are the functions of `crossmodalnet.nn`
    for name in ("nlc_loss", "fader_loss", "discriminator_loss", "group_lasso", "pearson_per_row"):
        assert getattr(crossmodalnet.train, name) is getattr(crossmodalnet.nn, name)


def test_discriminator_loss_penalty():
    z = torch.randn(6, 4, requires_grad=True)
    w = torch.randn(4, 3)
    logits = [z @ w]
    codes = [torch.tensor([0, 1, 2, 0, 1, 2])]
    total, ce = discriminator_loss(logits, codes, z, gradient_penalty=0.4)
    # d(sum logits)/dz = w.sum(1) for every cell → penalty = ||w.sum(1)||²
    penalty = w.sum(1).square().sum()
    assert total.item() == pytest.approx(ce.item() + 0.4 * penalty.item(), rel=1e-5)
    no_pen, ce0 = discriminator_loss(logits, codes, z, gradient_penalty=0.0)
    assert no_pen.item() == pytest.approx(ce0.item())


def test_group_lasso_value_and_gradient():
    w = torch.tensor([[0.0, 3.0, 1.0], [0.0, 4.0, -1.0]], requires_grad=True)
    value = group_lasso(w)
    assert value.item() == pytest.approx(5.0 + math.sqrt(2.0))
    (grad,) = torch.autograd.grad(value, w)
    # the gradient of each non-zero column is its unit vector; an all-zero column gets zero, not NaN
    expected = torch.tensor([[0.0, 0.6, 1 / math.sqrt(2.0)], [0.0, 0.8, -1 / math.sqrt(2.0)]])
    torch.testing.assert_close(grad, expected)


def test_confusion_loss_is_log_k_at_uniform_output_and_bounded_below():
    from crossmodalnet.nn import confusion_loss

    uniform = torch.zeros(6, 3)
    assert confusion_loss([uniform]).item() == pytest.approx(math.log(3), rel=1e-6)
    # two discriminators add up
    assert confusion_loss([uniform, torch.zeros(6, 2)]).item() == pytest.approx(math.log(3) + math.log(2), rel=1e-6)
    # a confident discriminator (right or wrong) costs more than the uniform output
    confident = torch.tensor([[10.0, 0.0, 0.0]]).repeat(6, 1)
    assert confusion_loss([confident]).item() > math.log(3) + 1
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert confusion_loss([torch.randn(6, 3, generator=gen)]).item() >= math.log(3) - 1e-6
    assert confusion_loss([]).item() == 0.0
