from __future__ import annotations

import pytest
import torch

from crossmodalnet.train import gradnorm_loss, is_discriminator_step, renormalize_weights


def test_gradnorm_loss_value_by_hand():
    w = torch.tensor([1.0, 1.0], requires_grad=True)
    grad_norms = torch.tensor([2.0, 4.0])
    losses = torch.tensor([1.0, 1.0])
    init = torch.tensor([1.0, 1.0])
    # equal loss ratios → target = mean G = 3 for both → |2-3| + |4-3| = 2
    loss = gradnorm_loss(w, grad_norms, losses, init, alpha=0.5)
    assert loss.item() == pytest.approx(2.0)
    (g,) = torch.autograd.grad(loss, w)
    # dL/dw_i = sign(G_i - target) * grad_norm_i (target detached)
    assert g.tolist() == pytest.approx([-2.0, 4.0])


def test_gradnorm_target_is_a_constant_when_loss_ratios_differ():
    w = torch.tensor([1.0, 1.0], requires_grad=True)
    grad_norms = torch.tensor([1.0, 3.0])
    # loss ratios 2 and 1 → inverse training rates 4/3 and 2/3 → target = mean G · rate^0.5
    loss = gradnorm_loss(w, grad_norms, torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), alpha=0.5)
    target = 2.0 * torch.tensor([4.0 / 3.0, 2.0 / 3.0]).sqrt()
    assert loss.item() == pytest.approx((target[0] - 1.0 + 3.0 - target[1]).item())
    (g,) = torch.autograd.grad(loss, w)
    # G_1 < target_1 and G_2 > target_2; with the target held constant dL/dw_i = sign(G_i - target_i) · grad_norm_i
    assert g.tolist() == pytest.approx([-1.0, 3.0]), "GradNorm gradient must not flow into the target"


def test_gradnorm_moves_weight_towards_smaller_gradient_task():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([w], lr=0.05)
    grad_norms = torch.tensor([1.0, 10.0])
    for _ in range(50):
        opt.zero_grad()
        loss = gradnorm_loss(w, grad_norms, torch.ones(2), torch.ones(2), alpha=0.5)
        loss.backward()
        opt.step()
        renormalize_weights(w.data)
    assert w[0] > w[1]
    assert w.sum().item() == pytest.approx(2.0)
    # weighted gradient norms move towards each other
    assert abs(w[0].item() * 1.0 - w[1].item() * 10.0) < 9.0


def test_gradnorm_gradient_does_not_reach_network():
    layer = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    l1 = layer(x).pow(2).mean()
    l2 = layer(x).abs().mean()
    (g1,) = torch.autograd.grad(l1, layer.weight, retain_graph=True)
    (g2,) = torch.autograd.grad(l2, layer.weight, retain_graph=True)
    w = torch.ones(2, requires_grad=True)
    loss = gradnorm_loss(w, torch.stack([g1.norm(), g2.norm()]), torch.stack([l1, l2]), torch.ones(2))
    loss.backward()
    assert w.grad is not None
    assert layer.weight.grad is None
    assert layer.bias.grad is None


def test_gradnorm_alpha_favours_slower_task():
    w = torch.ones(2, requires_grad=True)
    norms = torch.tensor([1.0, 1.0])
    # task 0 has trained less (ratio 1 vs 0.25) → its target is larger → its weight's gradient is negative
    loss = gradnorm_loss(w, norms, torch.tensor([1.0, 0.25]), torch.ones(2), alpha=1.0)
    (g,) = torch.autograd.grad(loss, w)
    assert g[0] < 0 < g[1]


def test_renormalize_weights():
    w = torch.tensor([3.0, 1.0])
    renormalize_weights(w)
    assert w.tolist() == pytest.approx([1.5, 0.5])
    w = torch.tensor([-1.0, 1.0])
    renormalize_weights(w)
    assert (w > 0).all()
    assert w.sum().item() == pytest.approx(2.0)


@pytest.mark.parametrize(("learning_step", "expected"), [(3, [3, 6, 9]), (5, [5]), (1, list(range(1, 10)))])
def test_discriminator_schedule(learning_step, expected):
    steps = [t for t in range(1, 10) if is_discriminator_step(t, learning_step)]
    assert steps == expected


def test_discriminator_schedule_off():
    assert not any(is_discriminator_step(t, 0) for t in range(1, 10))
