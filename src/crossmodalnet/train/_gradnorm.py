"""GradNorm (:cite:t:`Chen2018`) for the two CrossmodalNet tasks, as pure tensor functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def gradnorm_loss(
    weights: torch.Tensor,
    grad_norms: torch.Tensor,
    losses: torch.Tensor,
    initial_losses: torch.Tensor,
    *,
    alpha: float = 0.5,
) -> torch.Tensor:
    r"""GradNorm objective :math:`\mathcal{L}_G = \sum_i |G_i - \bar G \, r_i^\alpha|`.

    Parameters
    ----------
    weights
        Task weights :math:`w_i` (requires grad), shape (k,).
    grad_norms
        L2 norms of the *unweighted* task gradients on the shared layer, detached, shape (k,).
        :math:`G_i = w_i \cdot` ``grad_norms[i]``, so the objective depends on the network only
        through constants and its gradient reaches ``weights`` alone.
    losses
        Current task losses, shape (k,).
    initial_losses
        Task losses at the first step, shape (k,).
    alpha
        Restoring-force strength; 0 equalises gradient norms only.

    Returns
    -------
    Scalar tensor, differentiable with respect to ``weights`` only.
    """
    g = weights * grad_norms.detach()
    ratios = losses.detach() / initial_losses.detach()
    inverse_rate = ratios / ratios.mean()
    target = (g.mean() * inverse_rate.pow(alpha)).detach()
    return (g - target).abs().sum()


@torch.no_grad()
def renormalize_weights(weights: torch.Tensor) -> None:
    """Rescale task weights in place so they are positive and sum to the number of tasks."""
    weights.clamp_(min=1e-6)
    weights.mul_(weights.numel() / weights.sum())


class GradNormStep(NamedTuple):
    """Result of :func:`~crossmodalnet.train.gradnorm_step`."""

    gradients: list[torch.Tensor | None]
    r"""Gradient of :math:`\sum_i w_i \mathcal{L}_i` for each parameter (``None`` where no task reaches it)."""
    weight_gradient: torch.Tensor
    """Gradient of the GradNorm objective with respect to the task weights."""
    gradnorm_loss: torch.Tensor
    """The GradNorm objective (detached)."""
    weights: torch.Tensor
    """The task weights the gradients were combined with (a detached copy taken before any update)."""


def gradnorm_step(
    losses: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    shared: torch.Tensor,
    weights: torch.Tensor,
    initial_losses: torch.Tensor,
    *,
    ratio_losses: Sequence[torch.Tensor] | None = None,
    alpha: float = 0.5,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> GradNormStep:
    r"""Compute one GradNorm step (:cite:t:`Chen2018`; Algorithm 1 of :cite:t:`Yang2023`) without applying it.

    Computes each task's gradient on ``params`` (one backward pass per task), their weighted sum
    :math:`\sum_i w_i \nabla \mathcal{L}_i`, the task-gradient norms on the ``shared`` layer and
    the gradient of :func:`gradnorm_loss` with respect to ``weights``. On the first call
    (``initial_losses`` not yet positive) ``initial_losses`` is set, in place, to the current loss
    ratios' numerators; afterwards it is never changed. The caller writes the gradients into
    ``.grad`` and steps its optimisers, then calls :func:`renormalize_weights`.

    Parameters
    ----------
    losses
        Task losses :math:`\mathcal{L}_i`, each differentiable with respect to ``params``; the last
        backward pass frees their graph.
    params
        Parameters the task losses train (they must include ``shared``).
    shared
        The shared layer whose gradient norms GradNorm balances (MLP1's first layer).
    weights
        Task weights :math:`w_i` (a leaf that requires grad), shape (k,).
    initial_losses
        Reference losses, shape (k,); all zero before the first step.
    ratio_losses
        Losses whose ratio to ``initial_losses`` measures each task's training rate, if not ``losses``
        (CrossmodalNet uses the MSE for the Fader task, which can be negative through its
        adversarial term).
    alpha
        GradNorm restoring force.
    reduce
        Applied to the first step's losses before they are stored (e.g. a mean across processes
        under data-parallel training).

    Returns
    -------
    The combined parameter gradients, the task-weight gradient, the GradNorm objective and the
    weights used.
    """
    losses = list(losses)
    grads = [
        torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
        for k, loss in enumerate(losses)
    ]
    i_shared = next(i for i, p in enumerate(params) if p is shared)
    grad_norms = torch.stack([g[i_shared].norm() for g in grads])
    rate_losses = torch.stack([loss.detach() for loss in (losses if ratio_losses is None else ratio_losses)])
    if not bool(initial_losses.gt(0).all()):
        first = rate_losses if reduce is None else reduce(rate_losses)
        initial_losses.copy_(first.clamp_min(1e-8))
    w_now = weights.detach().clone()
    combined: list[torch.Tensor | None] = []
    for per_param in zip(*grads, strict=True):
        total = None
        for w_k, g in zip(w_now, per_param, strict=True):
            if g is not None:
                total = w_k * g if total is None else total + w_k * g
        combined.append(total)
    objective = gradnorm_loss(weights, grad_norms, rate_losses, initial_losses, alpha=alpha)
    (weight_gradient,) = torch.autograd.grad(objective, weights)
    return GradNormStep(combined, weight_gradient, objective.detach(), w_now)
