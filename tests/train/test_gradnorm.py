from __future__ import annotations

import pytest
import torch

from crossmodalnet.train import gradnorm_loss, gradnorm_step, is_discriminator_step, renormalize_weights


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


def _two_task_net():
    """A shared layer, a head used by task 1 only, and a parameter no task uses."""
    torch.manual_seed(0)
    shared, head, unused = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), torch.nn.Linear(1, 1)
    x = torch.randn(16, 3)

    def losses():
        h = shared(x)
        return h.square().mean(), (head(h) - 1.0).abs().mean()

    return shared, head, unused, losses


def test_gradnorm_step_combines_task_gradients_and_weight_gradient():
    shared, head, unused, losses = _two_task_net()
    params = [*shared.parameters(), *head.parameters(), *unused.parameters()]
    w = torch.nn.Parameter(torch.tensor([0.6, 1.4]))
    initial = torch.zeros(2)
    l1, l2 = losses()
    g1 = torch.autograd.grad(l1, params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(l2, params, retain_graph=True, allow_unused=True)
    ratio = torch.stack([l1.detach(), 2.0 * l2.detach()])
    step = gradnorm_step([l1, l2], params, shared.weight, w, initial, ratio_losses=list(ratio), alpha=0.5)
    # the combined gradient is w1·∇L1 + w2·∇L2; the head gets task 2's share only, the unused layer nothing
    for i in range(2):
        torch.testing.assert_close(step.gradients[i], 0.6 * g1[i] + 1.4 * g2[i])
    for i in range(2, 4):
        assert g1[i] is None
        torch.testing.assert_close(step.gradients[i], 1.4 * g2[i])
    assert step.gradients[4] is None
    assert step.gradients[5] is None
    # the first step stores the ratio losses as the reference
    torch.testing.assert_close(initial, ratio)
    norms = torch.stack([g1[0].norm(), g2[0].norm()])
    w_ref = w.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(gradnorm_loss(w_ref, norms, ratio, ratio, alpha=0.5), w_ref)
    torch.testing.assert_close(step.weight_gradient, expected)
    assert step.weights.tolist() == pytest.approx([0.6, 1.4])
    assert w.grad is None, "the step computes gradients; the caller writes them"


def test_gradnorm_step_sets_initial_losses_once():
    shared, _, _, losses = _two_task_net()
    params = list(shared.parameters())
    w = torch.nn.Parameter(torch.ones(2))
    initial = torch.zeros(2)
    calls = []

    def reduce(t):
        calls.append(t.clone())
        return 2.0 * t

    l1, l2 = losses()
    gradnorm_step([l1, l2 * 0.0 + l1], params, shared.weight, w, initial, reduce=reduce)
    first = initial.clone()
    torch.testing.assert_close(first, 2.0 * torch.stack([l1, l1]).detach())  # reduced before it is stored
    with torch.no_grad():
        shared.weight.mul_(3.0)  # the losses change ...
    l1, l2 = losses()
    gradnorm_step([l1, l2], params, shared.weight, w, initial, reduce=reduce)
    assert torch.equal(initial, first), "... and the reference stays that of the first step"
    assert len(calls) == 1
