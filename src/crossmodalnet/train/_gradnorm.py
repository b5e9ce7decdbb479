"""GradNorm (:cite:t:`Chen2018`) for the two CrossmodalNet tasks, as pure tensor functions."""

from __future__ import annotations

import torch


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
