"""Gene saliency of a trained model: gradients of the predicted proteins with respect to its RNA input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch

from ._docstrings import docs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

_SALIENCY_METHODS = ("gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad")
_BASELINE_METHODS = ("gradient_x_input", "integrated_gradients")


class SaliencyMixin:
    """:meth:`get_saliency`: rank genes for each protein by attribution methods over a trained model."""

    def _training_gene_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of every gene over the training cells (for saliency scaling and baselines).

        Fitted by :meth:`train` (``gene_moments_``, saved with the model); a model trained before that
        attribute existed recomputes them from scvi-tools' ``train_indices`` when it still has them.
        """
        moments = getattr(self, "gene_moments_", None)
        if moments is None:
            train_idx = getattr(self, "train_indices", None)
            if train_idx is None or self.adata_manager is None:
                raise ValueError(
                    "This model has no gene statistics of its training cells (it was saved by an older version). "
                    "Use `method='gradient'` or `method='integrated_gradients'` with `baseline='zeros'`, "
                    "or retrain the model."
                )
            self._fit_gene_moments(np.asarray(train_idx))
            moments = self.gene_moments_
        return (
            torch.as_tensor(np.asarray(moments["mean"]), dtype=torch.float32),
            torch.as_tensor(np.asarray(moments["sd"]), dtype=torch.float32),
        )

    @docs.dedent
    def get_saliency(
        self,
        mdata: MuData | None = None,
        *,
        proteins: str | Sequence[str] | None = None,
        method: Literal[
            "gradient", "gradient_x_sd", "gradient_x_input", "integrated_gradients", "smoothgrad"
        ] = "gradient",
        aggregate: Literal["sum", "mean", "abs_sum", "abs_mean"] = "sum",
        baseline: Literal["zeros", "mean"] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        time: object = None,
        n_steps: int = 50,
        n_samples: int = 20,
        noise_scale: float = 0.15,
        random_state: int = 0,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        r"""Rank genes for each protein by saliency :cite:p:`Simonyan2013,Yang2023`.

        Each cell :math:`i` gets an attribution :math:`a_i(g, j)` of gene :math:`g` to protein
        :math:`j`, and ``aggregate`` combines them over the chosen cells. With
        :math:`\partial_g \hat y_j(x) = \partial \hat y_j / \partial x_g` at expression :math:`x`,
        :math:`s_g` the gene's standard deviation over the training cells and :math:`b` the baseline:

        - ``"gradient"``: :math:`a_i = \partial_g \hat y_j(x_i)`, the paper's :math:`\gamma_j`
          (with ``aggregate="sum"``). Its unit is protein per unit of log-expression, which favours
          genes that vary little.
        - ``"gradient_x_sd"``: :math:`a_i = s_g\,\partial_g \hat y_j(x_i)`, the change of the protein
          per gene standard deviation (attributions in standardised-gene units).
        - ``"gradient_x_input"``: :math:`a_i = (x_{ig} - b_g)\,\partial_g \hat y_j(x_i)`.
        - ``"integrated_gradients"`` :cite:p:`Sundararajan2017`:
          :math:`a_i = (x_{ig} - b_g)\,\frac{1}{K}\sum_k \partial_g \hat y_j(b + \alpha_k (x_i - b))`
          with :math:`\alpha_k = (k + 1/2)/K`, ``K = n_steps``. The attributions of a cell sum to
          :math:`\hat y_j(x_i) - \hat y_j(b)`.
        - ``"smoothgrad"`` :cite:p:`Smilkov2017`: :math:`a_i = s_g\,\frac{1}{N}\sum_n \partial_g \hat
          y_j(x_i + \varepsilon_n)` with :math:`\varepsilon_{ng} \sim \mathcal N(0, (\sigma s_g)^2)`,
          ``N = n_samples``, :math:`\sigma` = ``noise_scale``: ``"gradient_x_sd"`` averaged over noisy
          copies of each cell.

        Gradients are taken with respect to the registered RNA input (e.g. log-normalised
        expression), with the network in evaluation mode, batched: one backward pass per batch (and
        per step or noise sample) computes all requested proteins at once.

        Parameters
        ----------
        %(query_mdata)s
        proteins
            Proteins to compute; all by default.
        method
            Attribution per cell, see above: ``"gradient"`` (the paper's saliency),
            ``"gradient_x_sd"``, ``"gradient_x_input"``, ``"integrated_gradients"`` or ``"smoothgrad"``.
        aggregate
            How per-cell attributions are combined: ``"sum"`` (the paper's :math:`\gamma_j`, signed),
            ``"mean"`` (sum divided by the number of cells, comparable across cell subsets),
            ``"abs_sum"`` / ``"abs_mean"`` (magnitudes, so opposite effects in different cells do not
            cancel). Attributions relative to the mean cell (``baseline="mean"``) are positive in some
            cells and negative in others by construction: combine them with ``"abs_sum"`` or ``"abs_mean"``.
        baseline
            Reference expression :math:`b` of ``"gradient_x_input"`` and ``"integrated_gradients"``:
            ``"zeros"`` (no expression; the default) or ``"mean"`` (the mean training cell). Other
            methods take no baseline.
        indices
            Positions of the cells to use (e.g. one time point or cell type); all cells by default.
        %(saliency_settings)s
        batch_size
            Cells per backward pass; memory grows with ``batch_size × n_genes × n_proteins``.

        Returns
        -------
        Genes × proteins DataFrame of saliency scores; rank genes by their magnitude (for signed
        aggregates, positive = the gene raises the protein).
        """
        self._check_if_trained(warn=False)
        if method not in _SALIENCY_METHODS:
            raise ValueError(f"`method` must be one of {', '.join(map(repr, _SALIENCY_METHODS))}, got {method!r}.")
        if aggregate not in ("sum", "mean", "abs_sum", "abs_mean"):
            raise ValueError(f"`aggregate` must be one of 'sum', 'mean', 'abs_sum', 'abs_mean', got {aggregate!r}.")
        if baseline is not None and method not in _BASELINE_METHODS:
            raise ValueError(
                f"`baseline` applies to 'gradient_x_input' and 'integrated_gradients' only; "
                f"drop it for method={method!r}."
            )
        baseline = "zeros" if baseline is None else baseline
        if baseline not in ("zeros", "mean"):
            raise ValueError(f"`baseline` must be 'zeros' or 'mean', got {baseline!r}.")
        if n_steps < 1:
            raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
        if n_samples < 1:
            raise ValueError(f"`n_samples` must be at least 1, got {n_samples}.")
        if not (np.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(
                f"`noise_scale` must be a non-negative number (gene standard deviations), got {noise_scale!r}."
            )
        mdata = self._resolve_mdata(mdata)
        names = (
            [proteins]
            if isinstance(proteins, str)
            else (list(self.protein_names) if proteins is None else list(proteins))
        )
        unknown = [p for p in names if p not in self.protein_names]
        if unknown:
            raise KeyError(f"Unknown protein(s) {unknown[:5]}; the model predicts {list(self.protein_names)[:10]}...")
        cols = torch.as_tensor(self.protein_names.get_indexer(names), dtype=torch.long)
        X, rows = self._rna_rows(mdata)
        covariates = self._covariates(mdata, time=time)
        table = self.module.covariate_embeddings[0].weight.detach()
        if indices is not None:
            keep = np.zeros(mdata.n_obs, dtype=bool)
            keep[np.asarray(indices)] = True
            rows = np.where(keep, rows, -1)
        gene_mean = gene_sd = None
        if method in ("gradient_x_sd", "smoothgrad") or (method in _BASELINE_METHODS and baseline == "mean"):
            gene_mean, gene_sd = (t.to(self.device) for t in self._training_gene_moments())
        generator = torch.Generator().manual_seed(int(random_state)) if method == "smoothgrad" else None
        self.module.eval()
        n_cells = 0
        total = torch.zeros(len(names), self.n_genes, dtype=torch.float64)
        eye = torch.eye(len(names), device=self.device)

        def gradients(xs: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            """Proteins × cells × genes gradient at expression ``xs`` (one batched backward pass)."""
            xs = xs.detach().requires_grad_(requires_grad=True)
            with torch.enable_grad():
                # `w`: the time weights of the current batch (set in the loop below)
                linear = self.module.linear_prediction(xs, w) if self.module.linear_path else None
                out = self.module.generative(self.module.inference(xs)["z"], c, linear)["protein"]
                out = out[:, cols.to(xs.device)]
                # grad_outputs[j] selects protein j for every cell
                (g,) = torch.autograd.grad(
                    out, xs, grad_outputs=eye[:, None, :].expand(-1, xs.shape[0], -1), is_grads_batched=True
                )
            return g

        for pos, x in self._iter_batches(X, rows, batch_size):
            w, b, _ = covariates(pos)  # gradients through each cell's own batch embedding
            c = w @ table + b
            n_cells += x.shape[0]
            ref = gene_mean.expand_as(x) if baseline == "mean" and method in _BASELINE_METHODS else torch.zeros_like(x)
            if method in ("gradient", "gradient_x_sd"):
                per_cell = gradients(x, c)
            elif method == "gradient_x_input":
                per_cell = gradients(x, c) * (x - ref)
            elif method == "integrated_gradients":
                acc = torch.zeros(len(names), *x.shape, device=x.device)
                for k in range(n_steps):
                    acc += gradients(ref + (x - ref) * ((k + 0.5) / n_steps), c)
                per_cell = acc / n_steps * (x - ref)
            else:  # smoothgrad
                acc = torch.zeros(len(names), *x.shape, device=x.device)
                for _ in range(n_samples):
                    noise = torch.randn(x.shape, generator=generator).to(x.device)
                    acc += gradients(x + noise * (noise_scale * gene_sd), c)
                per_cell = acc / n_samples
            if method in ("gradient_x_sd", "smoothgrad"):
                per_cell = per_cell * gene_sd
            per_cell = per_cell.abs() if aggregate.startswith("abs") else per_cell
            total += per_cell.sum(dim=1).double().cpu()
        if n_cells == 0:
            raise ValueError("No cell with RNA was selected; check `indices`.")
        if aggregate.endswith("mean"):
            total /= n_cells
        return pd.DataFrame(total.T.numpy(), index=self.gene_names.copy(), columns=pd.Index(names, name="protein"))
