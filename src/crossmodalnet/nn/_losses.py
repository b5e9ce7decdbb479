"""Loss functions of CrossmodalNet as pure tensor functions.

They sit below both :mod:`crossmodalnet.module` (which computes the per-task terms) and
:mod:`crossmodalnet.train` (which balances them), so neither imports the other for the objective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from collections.abc import Sequence


def pearson_per_row(
    pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-8, measured: torch.Tensor | None = None
) -> torch.Tensor:
    """Pearson correlation of each row of ``pred`` with the same row of ``target``.

    Rows with zero variance get a correlation of 0 instead of NaN.

    Parameters
    ----------
    pred, target
        Tensors of shape (n, p).
    eps
        Added to the product of variances before the square root.
    measured
        Boolean tensor of shape (n, p): only these entries of a row enter its correlation (the
        others, e.g. NaN targets of proteins a cell did not measure, are ignored, also in the
        gradient). ``None``: every entry.

    Returns
    -------
    Tensor of shape (n,).
    """
    if measured is None:
        pred_c = pred - pred.mean(dim=1, keepdim=True)
        target_c = target - target.mean(dim=1, keepdim=True)
    else:
        m = measured.to(pred.dtype)
        n = m.sum(dim=1, keepdim=True).clamp(min=1.0)
        pred = torch.where(measured, pred, torch.zeros_like(pred))
        target = torch.where(measured, target, torch.zeros_like(target))
        pred_c = (pred - pred.sum(dim=1, keepdim=True) / n) * m
        target_c = (target - target.sum(dim=1, keepdim=True) / n) * m
    cov = (pred_c * target_c).sum(dim=1)
    denom = torch.sqrt((pred_c.square().sum(dim=1) * target_c.square().sum(dim=1)) + eps)
    return cov / denom


def measured_entries(target: torch.Tensor) -> torch.Tensor | None:
    """Entries of ``target`` that were measured (not NaN); ``None`` when all were (the unmasked losses apply).

    Parameters
    ----------
    target
        Observed proteins, cells × proteins; NaN where a cell's panel did not measure a protein.

    Returns
    -------
    Boolean tensor of the shape of ``target``, or ``None``.
    """
    missing = torch.isnan(target)
    return None if not bool(missing.any()) else ~missing


def nlc_loss(pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    r"""Negative log-correlation loss, averaged over cells.

    :math:`\mathcal{L}_{NLC,i} = -\log(\max((\mathrm{corr}(\hat y_i, y_i) + 1) / 2, \epsilon))`
    :cite:p:`Yang2023`. The paper sums over cells; the mean is used here so the loss scale does
    not depend on the mini-batch size (GradNorm rescales the task weights either way).

    NaN in ``target`` means "not measured": each cell's correlation is taken over the proteins it
    measured, and cells with fewer than two measured proteins are left out of the mean.

    Parameters
    ----------
    pred, target
        Predicted and observed proteins, cells × proteins.
    eps
        Floor of the rescaled correlation; a constant row gives ``log 2``, never NaN.

    Returns
    -------
    Scalar tensor.
    """
    measured = measured_entries(target)
    r = pearson_per_row(pred, target, measured=measured)
    per_cell = -torch.log(torch.clamp((r + 1.0) / 2.0, min=eps))
    if measured is None:
        return per_cell.mean()
    keep = measured.sum(dim=1) >= 2
    return (per_cell * keep).sum() / keep.sum().clamp(min=1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the measured (non-NaN) entries of ``target``; the plain MSE when none is NaN.

    Parameters
    ----------
    pred, target
        Predicted and observed proteins, cells × proteins.

    Returns
    -------
    Scalar tensor (0 when nothing was measured).
    """
    measured = measured_entries(target)
    if measured is None:
        return F.mse_loss(pred, target)
    diff = torch.where(measured, pred - torch.where(measured, target, torch.zeros_like(target)), 0.0)
    return diff.square().sum() / measured.sum().clamp(min=1)


def adversarial_cross_entropy(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Cross-entropy of each discriminator's logits against its covariate's codes.

    Parameters
    ----------
    logits
        Discriminator logits (cells × categories), one per covariate.
    targets
        Integer class codes, one tensor per covariate.

    Returns
    -------
    One scalar tensor per covariate.
    """
    return [F.cross_entropy(lg, codes) for lg, codes in zip(logits, targets, strict=True)]


def confusion_loss(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Domain-confusion loss: cross-entropy of each discriminator's output against the uniform distribution.

    :math:`-\frac{1}{n K}\sum_i \sum_k \log \mathrm{softmax}(D(z_i))_k`, summed over the
    discriminators (:cite:t:`Tzeng2015`). Unlike the paper's :math:`-\mathrm{CE}` term, it is
    bounded below (by :math:`\sum \log K`) and minimal when the discriminator cannot tell the
    categories apart, instead of when it confidently predicts a wrong one.

    Parameters
    ----------
    logits
        Discriminator logits (cells × categories), one per covariate, computed from the
        (non-detached) basal latent.

    Returns
    -------
    Scalar tensor (0 for no discriminators).
    """
    total = None
    for lg in logits:
        term = -F.log_softmax(lg, dim=1).mean()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def covariate_mmd(
    z: torch.Tensor,
    codes: torch.Tensor,
    *,
    scales: Sequence[float] = (0.25, 1.0, 4.0),
    groups: torch.Tensor | None = None,
    min_cells: int = 3,
) -> torch.Tensor:
    r"""Maximum mean discrepancy between the cells of each category and all other cells, summed over categories.

    :math:`\sum_c \mathrm{MMD}^2(z_{t=c}, z_{t \neq c})` :cite:p:`Gretton2012` with a sum of Gaussian
    kernels :math:`\exp(-\lVert a - b \rVert^2 / (s \cdot m))` on the standardised latent, where
    :math:`m` is the median squared distance of the mini-batch (not differentiated) and :math:`s`
    runs over ``scales``. Its population value is 0 when every category has the same distribution
    in ``z`` (the mini-batch estimate, a V-statistic, is then small but positive) and it grows as
    any moment of one category departs from the rest, so minimising it removes what any
    classifier, linear or not, could read about the covariate.

    With ``groups`` (for example clusters of cell states), the discrepancy is conditional: it is
    computed within each group, between the group's cells of category :math:`c` and its other cells,
    and the groups are weighted by their share of the mini-batch,
    :math:`\sum_g \frac{n_g}{n} \sum_c \mathrm{MMD}^2(z_{g, t=c}, z_{g, t \neq c})`. It is then 0 when
    the covariate changes only how many cells each group has, not where a group's cells lie. A group
    and category is skipped when either side has fewer than ``min_cells`` cells.

    Parameters
    ----------
    z
        Latent of a mini-batch, cells × dimensions.
    codes
        Integer category of each cell (1-d).
    scales
        Kernel bandwidths, as multiples of the median squared distance.
    groups
        Integer group of each cell (1-d, like ``codes``); ``None``: one group, the unconditional
        discrepancy.
    min_cells
        With ``groups``: the fewest cells on each side of a comparison within a group (at least 2).

    Returns
    -------
    Scalar tensor (0 when no category has enough cells on both sides, at least two without
    ``groups``).
    """
    if groups is not None and groups.shape != codes.shape:
        raise ValueError(f"`groups` must have the shape of `codes` {tuple(codes.shape)}, got {tuple(groups.shape)}.")
    if groups is not None and (isinstance(min_cells, bool) or int(min_cells) != min_cells or min_cells < 2):
        raise ValueError(f"`min_cells` must be an integer >= 2, got {min_cells!r}.")
    zs = (z - z.mean(0)) / (z.std(0) + 1e-6)
    d = torch.cdist(zs, zs).square()
    med = d.detach().median().clamp_min(1e-6)
    k = sum(torch.exp(-d / (med * s)) for s in scales)

    def mmd(inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
        return k[inside][:, inside].mean() + k[outside][:, outside].mean() - 2 * k[inside][:, outside].mean()

    total = z.new_zeros(())
    if groups is None:
        for c in torch.unique(codes):
            inside = codes == c
            if int(inside.sum()) < 2 or int((~inside).sum()) < 2:
                continue
            total = total + mmd(inside, ~inside)
        return total
    n = codes.numel()
    for g in torch.unique(groups):
        member = groups == g
        share = float(member.sum()) / n
        for c in torch.unique(codes[member]):
            inside = member & (codes == c)
            outside = member & (codes != c)
            if int(inside.sum()) < min_cells or int(outside.sum()) < min_cells:
                continue
            total = total + share * mmd(inside, outside)
    return total


def fader_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    disc_logits: list[torch.Tensor] | None = None,
    disc_targets: list[torch.Tensor] | None = None,
    lambda_dis: float = 0.5,
    disc_ce: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Fader loss of the encoder/decoder: MSE minus :math:`\lambda` times the discriminators' cross-entropy.

    Minimising it reconstructs the proteins while making the basal latent uninformative of the
    adversarial covariates (time point).

    Parameters
    ----------
    pred, target
        Predicted and observed proteins, cells × proteins; NaN targets (not measured) are left out
        of the MSE (:func:`masked_mse`).
    disc_logits
        Discriminator logits computed from the (non-detached) basal latent, one per covariate.
    disc_targets
        Integer class codes, one tensor per covariate.
    lambda_dis
        Weight of the adversarial term (Table S1 "regularization").
    disc_ce
        The discriminators' cross-entropies, already computed (see :func:`adversarial_cross_entropy`),
        instead of ``disc_logits`` and ``disc_targets``.

    Returns
    -------
    The Fader loss, the MSE and the summed discriminator cross-entropy.
    """
    if disc_ce is not None and (disc_logits is not None or disc_targets is not None):
        raise ValueError("Pass either `disc_ce` or `disc_logits` and `disc_targets`, not both.")
    mse = masked_mse(pred, target)
    if disc_ce is None:
        disc_ce = adversarial_cross_entropy(disc_logits or [], disc_targets or [])
    ce = pred.new_zeros(())
    for term in disc_ce:
        ce = ce + term
    return mse - lambda_dis * ce, mse, ce


def discriminator_loss(
    logits: list[torch.Tensor],
    targets: list[torch.Tensor],
    z: torch.Tensor,
    *,
    gradient_penalty: float = 0.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the discriminators plus a gradient penalty on their input.

    The penalty is the mean squared norm of the gradient of the summed logits with respect to
    ``z`` (the CPA recipe); it keeps the discriminator smooth so the adversarial signal stays useful.

    Parameters
    ----------
    logits
        Logits computed from ``z`` (which must require grad when ``gradient_penalty > 0``).
    targets
        Integer class codes per covariate.
    z
        Detached basal latent with ``requires_grad=True``.
    gradient_penalty
        Weight of the penalty (Table S1).

    Returns
    -------
    The total loss and the cross-entropy part.
    """
    ce = z.new_zeros(())
    penalty = z.new_zeros(())
    for lg, codes in zip(logits, targets, strict=True):
        ce = ce + F.cross_entropy(lg, codes)
        if gradient_penalty > 0:
            (grad,) = torch.autograd.grad(lg.sum(), z, create_graph=True)
            penalty = penalty + grad.square().sum(dim=1).mean()
    return ce + gradient_penalty * penalty, ce


def group_lasso(weight: torch.Tensor) -> torch.Tensor:
    r"""Group-lasso norm of a layer's input columns, :math:`\sum_g \lVert W_{:, g} \rVert_2`.

    On MLP1's first layer (``hidden × genes``) each group is one gene's outgoing weights, so the
    penalty drives whole genes towards zero and favours a few informative input genes. It is a sum
    of norms, so a column of zeros contributes 0 and has a zero (sub)gradient.

    Parameters
    ----------
    weight
        Weight matrix (out features × in features).

    Returns
    -------
    torch.Tensor
        Scalar penalty.
    """
    return torch.linalg.vector_norm(weight, dim=0).sum()
