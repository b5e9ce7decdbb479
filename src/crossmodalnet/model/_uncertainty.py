"""Calibrated uncertainty of predicted proteins: MC-dropout spread, extra spread terms, split-conformal scaling.

The model class inherits :class:`UncertaintyMixin`; it only calls the model's prediction path
(:meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`), so any change to how a prediction is
computed carries over to its uncertainty.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from crossmodalnet._streaming import RnaInput
from crossmodalnet._utils import check_level, get_layer, get_modality, resolve_obs_column, seed_of

from ._docstrings import docs

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mudata import MuData

logger = logging.getLogger(__name__)

_CALIBRATIONS = ("auto", "protein", "pooled")
_MIN_CELLS_PER_PROTEIN = 100
_MIN_CELLS = 5
_N_NEIGHBOURS = 20
_N_QUANTILES = 33
_MAX_SKETCH_CELLS = 2000


@dataclass(frozen=True)
class ProteinUncertainty:
    """Predicted proteins with a per-value spread and a central interval (cells × proteins each).

    Parameters
    ----------
    mean
        The prediction, identical to ``predict_protein(..., return_uncertainty=False)``.
    std
        Spread of each predicted value, on the protein scale: the calibrated MC-dropout spread, plus
        the scaled spread across interpolated time points and across imputations of missing genes.
    lower, upper
        Bounds of the central interval at ``level``: ``mean ∓ k · std``, with ``k`` the
        split-conformal quantile of the validation cells.
    level
        Nominal coverage of the interval.
    multiplier
        ``k`` of each protein (equal for all proteins with pooled calibration).
    calibration
        ``"protein"`` (one ``k`` per protein) or ``"pooled"`` (one ``k`` for all).
    """

    mean: pd.DataFrame
    std: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    level: float
    multiplier: pd.Series
    calibration: str


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split-conformal quantile: the ``⌈(n + 1) · level⌉``-th smallest finite score (``inf`` if too few).

    Parameters
    ----------
    scores
        Non-conformity scores of the calibration values.
    level
        Nominal coverage, in (0, 1).

    Returns
    -------
    The multiplier that covers at least ``level`` of exchangeable new values.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    n = scores.size
    rank = math.ceil((n + 1) * level)
    if n == 0 or rank > n:
        return float("inf")
    return float(scores[rank - 1])


def calibration_scores(err: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-protein scale of the spread and the non-conformity scores of calibration values.

    The scale of a protein makes the RMS of ``err / (scale · spread)`` 1 over the calibration cells
    that measured it, when there are at least ``_MIN_CELLS_PER_PROTEIN`` (100) of them; proteins with
    fewer get one pooled scale over every measured value (without missing values: per protein from
    100 calibration cells on, else one scale for all). A non-finite or zero scale becomes 1.

    Parameters
    ----------
    err
        Absolute errors ``|y − ŷ|`` (cells × proteins); NaN where the cell did not measure the protein.
    spread
        Spread of each prediction (cells × proteins), positive.

    Returns
    -------
    The scale of each protein, the scores ``err / (scale · spread)`` (NaN where not measured) and
    the number of cells that measured each protein.
    """
    err = np.asarray(err, dtype=np.float64)
    ratio_sq = (err / spread) ** 2
    measured = np.isfinite(err)
    n_per_protein = measured.sum(axis=0).astype(np.int64)
    if measured.all():
        if err.shape[0] >= _MIN_CELLS_PER_PROTEIN:
            scale = np.sqrt(np.mean(ratio_sq, axis=0))
        else:
            # too few cells to scale each protein: one scale for all (the level term keeps them apart)
            scale = np.full(err.shape[1], np.sqrt(np.mean(ratio_sq)))
    else:
        ratio_sq = np.where(measured, ratio_sq, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.sqrt(ratio_sq.sum(axis=0) / n_per_protein)
            pooled = np.sqrt(ratio_sq.sum() / measured.sum())
        scale = np.where(n_per_protein >= _MIN_CELLS_PER_PROTEIN, own, pooled)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return scale, err / (scale * spread), n_per_protein


class FilledColumns:
    """Rows of a model's RNA input with some columns replaced, read as dense blocks.

    Parameters
    ----------
    X
        Cells × genes matrix as :meth:`_rna_rows` returns it: dense, sparse, backed, or a
        :class:`~crossmodalnet._utils.NormalizedRows` view of raw counts; it is never changed.
    cols
        Positions of the replaced columns.
    values
        Their values, cells × ``len(cols)``.
    """

    def __init__(self, X, cols: np.ndarray, values: np.ndarray):
        self.X = X
        self.cols = np.asarray(cols, dtype=np.int64)
        self.values = values
        self.shape = X.shape

    def __getitem__(self, rows) -> np.ndarray:
        """The dense float32 block of ``rows`` (a slice or increasing positions), with the columns filled in."""
        block = self.X[rows]
        block = block.toarray() if sparse.issparse(block) else np.array(block, dtype=np.float32)
        block = block.astype(np.float32, copy=False)
        block[:, self.cols] = self.values[rows]
        return block


@contextlib.contextmanager
def _mc_dropout(module: nn.Module, rate: float | None, generator: torch.Generator) -> Iterator[None]:
    """Keep the network in evaluation mode but let every dropout layer drop units (seeded masks)."""
    layers = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    if not layers:
        raise ValueError("The model has no dropout layer, so MC dropout cannot give a spread.")
    rates = [m.p if rate is None else rate for m in layers]
    if max(rates) <= 0:
        raise ValueError(
            "The model was trained without dropout (`dropout_rate=0`), so MC dropout gives no spread; pass "
            "`dropout_rate=` (e.g. 0.05) to `calibrate_uncertainty`."
        )

    def make_hook(p: float):
        def hook(_mod, inputs, _output):
            x = inputs[0]
            if p <= 0:
                return x
            keep = torch.rand(x.shape, generator=generator, device=generator.device) >= p
            return x * keep.to(x.device, x.dtype) / (1.0 - p)

        return hook

    handles = [m.register_forward_hook(make_hook(p)) for m, p in zip(layers, rates, strict=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class UncertaintyMixin:
    """Per-value spread and calibrated intervals for :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`.

    The spread of a predicted value has up to four parts, added as variances:

    1. the model's own variability: the standard deviation over MC-dropout passes;
    2. the difficulty of the predicted value: for each protein, the RMS training residual of the 20
       training cells whose prediction of that protein is nearest the cell's (errors grow or shrink
       with the predicted level); 1 and 2 are scaled to the RMS of the validation errors: per
       protein from 100 calibration cells on, with one scale for all proteins below;
    3. for a cell at an interpolated (unseen) time point, the spread of the predictions at the two
       neighbouring trained time points around the prediction, weighted by the interpolation weights and
       scaled by leaving out each interior trained time point (:meth:`_time_scale`; 0 with fewer than 3
       trained time points);
    4. for a query with genes the model was trained on but the query lacks, the spread of the
       predictions when those genes are filled with draws from the training cells' values instead
       of zeros (multiple imputation).

    The interval is ``prediction ∓ k · std``, where ``k`` is the split-conformal quantile of
    ``|observed − predicted| / std`` over the validation cells (they select the best epoch but
    never enter a gradient step) :cite:p:`Gal2016,Lei2018`.
    """

    uncertainty_: dict | None = None

    # --- calibration -------------------------------------------------------------------------
    @docs.dedent
    def calibrate_uncertainty(
        self,
        mdata: MuData | None = None,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        n_samples: int = 30,
        dropout_rate: float | None = None,
        rng: int | np.random.Generator | None = 0,
        batch_size: int = 1024,
    ) -> None:
        """Calibrate the uncertainty of :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein` on held-out cells with observed proteins.

        Stores in ``model.uncertainty_`` (saved and loaded with the model) the per-protein scale of
        the MC-dropout spread and the non-conformity scores ``|y − ŷ| / std`` of every calibration
        value, from which the interval multiplier of any level is computed, and the scale of the
        interpolated-time term (leaving out each interior trained time point). From up to 2,000
        training cells it also keeps the predictions and squared residuals (for the level term) and a
        quantile sketch of each gene (to impute genes a query lacks). :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein` with ``return_uncertainty=True`` calls this on the
        validation cells if the model is not calibrated yet.

        NaN in the observed proteins means "not measured" (e.g. references with different antibody
        panels): residuals, scales and conformal scores use measured values only, so a protein
        measured in one reference is calibrated on that reference's calibration cells. The number of
        calibration cells that measured each protein is in
        ``model.uncertainty_["n_cells_per_protein"]`` (and logged when it differs between proteins);
        a protein with fewer than 100 such cells is scaled with the pooled scale of every measured value.

        Parameters
        ----------
        mdata
            MuData with RNA and observed proteins (the model's modalities and layers); defaults to
            the training data.
        indices
            Positions of the calibration cells in ``mdata``. Defaults to the model's validation
            cells when ``mdata`` is the training data, else to all cells of ``mdata``. Never use
            training cells: their errors are smaller than those of new cells.
        n_samples
            MC-dropout passes per cell.
        dropout_rate
            Dropout rate of the MC passes; ``None`` uses each dropout layer's trained rate.
        rng
            Seed or :class:`numpy.random.Generator` of the dropout masks and of the gene sketch.
        %(forward_batch_size)s
        """
        self._check_if_trained(warn=False)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(f"`n_samples` must be an integer of at least 2, got {n_samples!r}.")
        if dropout_rate is not None and not 0.0 < float(dropout_rate) < 1.0:
            raise ValueError(f"`dropout_rate` must be None or strictly between 0 and 1, got {dropout_rate!r}.")
        own = mdata is None or mdata is self.adata
        mdata = self._resolve_mdata(mdata)
        if indices is None:
            if own:
                indices = getattr(self, "validation_indices_", None)
                if indices is None or len(indices) == 0:
                    raise ValueError(
                        "The model has no validation cells to calibrate on (trained with `validation_size=0`?). "
                        "Pass held-out cells with observed proteins: `calibrate_uncertainty(mdata, indices=...)`."
                    )
            else:
                indices = np.arange(mdata.n_obs)
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if indices.size == 0 or indices.min() < 0 or indices.max() >= mdata.n_obs:
            raise ValueError(f"`indices` must be non-empty positions in [0, {mdata.n_obs}), got {indices.size} values.")
        if indices.size < _MIN_CELLS:
            raise ValueError(
                f"Calibration needs at least {_MIN_CELLS} held-out cells with observed proteins, got {indices.size}; "
                "train with a larger `validation_size` or pass more cells."
            )
        sub = self._cell_subset(mdata, indices)
        observed = self._observed_proteins(mdata, sub.obs_names)
        kept = mdata.obs_names.get_indexer(sub.obs_names)  # the positions of the cells with RNA
        seed = seed_of(rng)
        pred, s_mc = self._mc_spread(
            sub, n_samples=n_samples, dropout_rate=dropout_rate, seed=seed, batch_size=batch_size
        )
        # NaN in the observed proteins: not measured (a panel without that antibody), left out per value
        observed_all = observed
        have = np.isfinite(pred).all(axis=1) & np.isfinite(observed).any(axis=1)
        pred, s_mc, observed = pred[have], s_mc[have], observed[have]
        if pred.shape[0] < _MIN_CELLS:
            raise ValueError(f"Fewer than {_MIN_CELLS} calibration cells have both RNA and observed proteins.")
        reference = self._reference_residuals(seed, batch_size=batch_size)
        local = self._level_spread(pred, reference)
        s_mc = np.sqrt(s_mc**2 + local**2)
        floor = self._spread_floor(s_mc)
        s_mc = np.maximum(s_mc, floor)
        scale, scores, n_per_protein = calibration_scores(np.abs(observed - pred), s_mc)
        time_scale = self._time_scale(sub, observed_all, seed, batch_size=batch_size)
        self.uncertainty_ = {
            "method": "mc_dropout_split_conformal",
            "scores": scores.astype(np.float32),
            "scale": scale.astype(np.float64),
            "floor": floor.astype(np.float64),
            "n_samples": int(n_samples),
            "dropout_rate": float("nan") if dropout_rate is None else float(dropout_rate),
            "seed": int(seed),
            "n_cells": int(scores.shape[0]),
            "n_cells_per_protein": n_per_protein.astype(np.int64),
            "calibration_indices": kept[have].astype(np.int64) if own else np.zeros(0, dtype=np.int64),
            "n_epochs": self._n_epochs_trained(),
            "gene_quantiles": self._gene_sketch(seed),
            **time_scale,
            **reference,
        }
        logger.info("calibrated uncertainty on %d held-out cells (%d MC-dropout passes)", scores.shape[0], n_samples)
        if (n_per_protein < scores.shape[0]).any():
            fewest = np.argsort(n_per_protein, kind="stable")[:5]
            logger.info(
                "calibration cells that measured each protein (model.uncertainty_['n_cells_per_protein']): "
                "%d to %d; fewest: %s",
                n_per_protein.min(),
                n_per_protein.max(),
                ", ".join(f"{self.protein_names[j]} {n_per_protein[j]}" for j in fewest),
            )
        unmeasured = np.flatnonzero(n_per_protein == 0)
        if unmeasured.size:
            logger.warning(
                "no calibration cell measured protein(s) %s: their spread is scaled and their intervals calibrated "
                "on the other proteins (pooled); pass held-out cells that measured them to "
                "`calibrate_uncertainty(mdata, indices=...)` to calibrate them",
                [str(self.protein_names[j]) for j in unmeasured[:5]],
            )

    @contextlib.contextmanager
    def _without_time_point(self, code: int) -> Iterator[None]:
        """Treat the trained time point ``code`` as unseen: its cells are predicted by interpolation."""
        before = self.trained_time_codes_
        self.trained_time_codes_ = np.setdiff1d(self._trained_codes(), [code]).astype(np.int64)
        try:
            yield
        finally:
            self.trained_time_codes_ = before

    def _interior_time_codes(self) -> tuple[np.ndarray, str]:
        """Trained time points with a trained time point on each side, or an empty array and the reason."""
        none = np.zeros(0, dtype=np.int64)
        if self.get_setup_arg("time_key") is None:
            return none, "no time covariate"
        if self.time_values is None:
            return none, "the time points are not numeric, so no time point is interpolated"
        codes = self._trained_codes()
        if codes.size < 3:
            return none, f"{codes.size} trained time point(s): no interior time point to leave out"
        return codes[np.argsort(self.time_values[codes])][1:-1], "leave-one-time-point-out"

    def _time_scale(self, calibration: MuData, observed: np.ndarray, seed: int, *, batch_size: int) -> dict:
        """Scale of the interpolated-time term (term 3), by leaving out each interior trained time point.

        The cells of an interior trained time point (the calibration cells and the reference training
        cells there) are predicted as if their time point were unseen, interpolated from its two
        trained neighbours. The scale makes the mean time term of those interpolated predictions
        equal to their mean excess squared error over the predictions at their own time point
        (clipped at 0). Without an interior time point (fewer than 3 trained time points, or fewer
        than ``_MIN_CELLS`` cells there) the scale is 0: nothing measures how far an interpolation
        errs, so no time term is added.
        """
        interior, note = self._interior_time_codes()
        blocks = [(calibration, observed)]
        rows = self._reference_cells(seed)
        if interior.size and rows is not None:
            reference = self._cell_subset(self.adata, rows)
            blocks.append((reference, self._observed_proteins(self.adata, reference.obs_names)))
        excess = term = 0.0
        n_cells = 0
        for block, block_observed in blocks if interior.size else []:
            w_rows, w_codes = self._cell_time_weights(block)
            W = w_rows.numpy()[w_codes]
            for code in interior:
                at_code = np.flatnonzero(W[:, code] == 1.0)
                if at_code.size == 0:
                    continue
                cells = self._cell_subset(block, at_code)  # every cell of a block has RNA: none is dropped
                observed = block_observed[at_code]
                own = self.predict_protein(cells, batch_size=batch_size).to_numpy(dtype=np.float64)
                with self._without_time_point(int(code)):
                    interpolated = self.predict_protein(cells, batch_size=batch_size).to_numpy(dtype=np.float64)
                    var = self._time_variance(
                        cells, interpolated, time=None, allow_extrapolation=False, batch_size=batch_size
                    )
                keep = np.isfinite(observed).any(axis=1) & np.isfinite(own).all(axis=1)
                keep &= np.isfinite(interpolated).all(axis=1)
                measured = np.isfinite(observed[keep])  # NaN: not measured, no error and no term
                diff = (observed[keep] - interpolated[keep]) ** 2 - (observed[keep] - own[keep]) ** 2
                excess += float(np.sum(np.where(measured, diff, 0.0)))
                term += float(np.sum(np.where(measured, var[keep], 0.0)))
                n_cells += int(keep.sum())
        if interior.size and n_cells < _MIN_CELLS:
            note = f"{n_cells} cell(s) at the interior trained time points (fewer than {_MIN_CELLS})"
        if not interior.size or n_cells < _MIN_CELLS:
            if self.get_setup_arg("time_key") is not None:
                logger.info("interpolated time points get no extra spread: %s", note)
            return {"time_scale": 0.0, "time_scale_cells": int(n_cells), "time_scale_method": note}
        scale = max(excess, 0.0) / term if term > 0 else 0.0
        logger.info("time term scaled by %.3g (left-out time points, %d cells)", scale, n_cells)
        return {"time_scale": float(scale), "time_scale_cells": int(n_cells), "time_scale_method": note}

    def _n_epochs_trained(self) -> int:
        history = getattr(self, "history_", None) or {}
        return int(max((len(v) for v in history.values()), default=0))

    @staticmethod
    def _spread_floor(s_mc: np.ndarray) -> np.ndarray:
        """Smallest MC spread per protein: 1% of its median positive spread (proteins never exactly certain)."""
        floor = np.zeros(s_mc.shape[1])
        for j in range(s_mc.shape[1]):
            pos = s_mc[:, j][s_mc[:, j] > 0]
            floor[j] = 0.01 * np.median(pos) if pos.size else 1e-6
        return np.maximum(floor, 1e-6)

    def _observed_proteins(self, mdata: MuData, cells: pd.Index | None = None) -> np.ndarray:
        """Observed proteins of the ``cells`` of ``mdata`` (all by default; cells × model proteins), in the registered layer.

        Only the rows of those cells are read; cells without protein data get NaN rows, and values not
        measured (NaN, or ``False`` in the registered ``protein_mask_layer``) are NaN.
        """
        protein_key = self.get_setup_arg("protein_key")
        layer = self.get_setup_arg("protein_layer")
        prot = get_modality(mdata, protein_key, "CrossmodalNet.calibrate_uncertainty", role="protein")
        missing = self.protein_names.difference(pd.Index(prot.var_names.astype(str)))
        if len(missing):
            raise KeyError(
                f"Calibration needs every predicted protein in `mdata[{protein_key!r}]`; missing: {list(missing[:5])}."
            )
        cells = mdata.obs_names if cells is None else pd.Index(cells)
        rows = prot.obs_names.get_indexer(cells)
        have = np.flatnonzero(rows >= 0)
        out = np.full((len(cells), self.n_proteins), np.nan)
        if have.size:
            order = np.argsort(rows[have], kind="stable")  # backed (HDF5) matrices are read in increasing order
            X = self._measured_rows(prot, get_layer(prot, layer, protein_key), rows[have][order])
            cols = pd.Index(prot.var_names.astype(str)).get_indexer(self.protein_names)
            out[have[order]] = X[:, cols].astype(np.float64)
        return out

    def _reference_cells(self, seed: int) -> np.ndarray | None:
        """Positions of up to 2,000 training cells of the training data (``None`` without it)."""
        train_idx = getattr(self, "train_indices_", None)
        if self.adata is None or train_idx is None or len(train_idx) == 0:
            return None
        rows = np.sort(np.asarray(train_idx, dtype=np.int64))
        if rows.size > _MAX_SKETCH_CELLS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, _MAX_SKETCH_CELLS, replace=False))
        return rows

    def _reference_residuals(self, seed: int, *, batch_size: int) -> dict:
        """Predictions and squared residuals of up to 2,000 training cells (empty arrays without them).

        A residual of a protein the cell did not measure is NaN.
        """
        rows = self._reference_cells(seed)
        if rows is None:
            empty = np.zeros((0, self.n_proteins), dtype=np.float32)
            return {"reference_prediction": empty, "reference_residual_sq": empty.copy()}
        ref = self._cell_subset(self.adata, rows)
        pred = self.predict_protein(ref, batch_size=batch_size).to_numpy(dtype=np.float64)
        residual_sq = (self._observed_proteins(self.adata, ref.obs_names) - pred) ** 2
        # NaN residuals (proteins a cell did not measure) stay, and are skipped protein by protein
        keep = np.isfinite(pred).all(axis=1) & np.isfinite(residual_sq).any(axis=1)
        return {
            "reference_prediction": pred[keep].astype(np.float32),
            "reference_residual_sq": residual_sq[keep].astype(np.float32),
        }

    @staticmethod
    def _level_spread(pred: np.ndarray, reference: dict) -> np.ndarray:
        """RMS training residual of the training cells whose prediction of the protein is nearest ``pred``.

        For each protein, the ``_N_NEIGHBOURS`` training cells with the nearest predicted value (one
        window of the training cells sorted by their prediction) give the RMS residual of a
        predicted value ``pred`` (cells × proteins; NaN rows stay NaN, zeros without training cells).
        Only training cells that measured the protein (finite residual) count; a protein no training
        cell measured gets zeros.
        """
        ref_pred = np.asarray(reference["reference_prediction"], dtype=np.float64)
        residual_sq = np.asarray(reference["reference_residual_sq"], dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        out = np.zeros_like(pred)
        n = ref_pred.shape[0]
        if n == 0:
            return out
        for j in range(pred.shape[1]):
            measured = np.isfinite(residual_sq[:, j])
            ref_j, res_j = (
                (ref_pred[:, j], residual_sq[:, j])
                if measured.all()
                else (
                    ref_pred[measured, j],
                    residual_sq[measured, j],
                )
            )
            n_j = ref_j.size
            if n_j == 0:
                continue
            k = min(_N_NEIGHBOURS, n_j)
            order = np.argsort(ref_j, kind="stable")
            cumulative = np.r_[0.0, np.cumsum(res_j[order])]
            pos = np.searchsorted(ref_j[order], pred[:, j])
            start = np.clip(pos - k // 2, 0, n_j - k)
            out[:, j] = np.sqrt((cumulative[start + k] - cumulative[start]) / k)
        out[~np.isfinite(pred).all(axis=1)] = np.nan
        return out

    def _local_spread(self, mdata: MuData, reference: dict, *, batch_size: int) -> np.ndarray:
        """:meth:`_level_spread` of the model's predictions of ``mdata`` (cells × proteins)."""
        pred = self.predict_protein(mdata, batch_size=batch_size).to_numpy(dtype=np.float64)
        return self._level_spread(pred, reference)

    def _gene_sketch(self, seed: int) -> np.ndarray:
        """Quantiles (``_N_QUANTILES`` × genes) of each gene over up to 2,000 training cells, or an empty array."""
        rows = self._reference_cells(seed)
        if rows is None:
            return np.zeros((0, self.n_genes), dtype=np.float32)
        X, _ = self._rna_rows(self.adata)
        block = X[rows]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        return np.quantile(block.astype(np.float64), np.linspace(0, 1, _N_QUANTILES), axis=0).astype(np.float32)

    # --- spread components -------------------------------------------------------------------
    def _mc_spread(
        self, mdata: MuData, *, n_samples: int, dropout_rate: float | None, seed: int, batch_size: int, **kwargs
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prediction (eval mode) and standard deviation over ``n_samples`` MC-dropout passes."""
        pred = self.predict_protein(mdata, batch_size=batch_size, **kwargs).to_numpy(dtype=np.float64)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        total = np.zeros_like(pred)
        total_sq = np.zeros_like(pred)
        with _mc_dropout(self.module, dropout_rate, generator):
            for _ in range(n_samples):
                draw = self.predict_protein(mdata, batch_size=batch_size, **kwargs).to_numpy(dtype=np.float64)
                total += draw
                total_sq += draw**2
        mean = total / n_samples
        var = np.maximum(total_sq / n_samples - mean**2, 0.0) * n_samples / (n_samples - 1)
        return pred, np.sqrt(var)

    def _time_variance(
        self, mdata: MuData, pred: np.ndarray, *, time: object, allow_extrapolation: bool, **kwargs
    ) -> np.ndarray:
        """``Σ_c w_c (ŷ_c − ŷ)²`` over the trained time points ``c`` an interpolated cell's time is made of."""
        w_rows, w_codes = self._cell_time_weights(mdata, time=time, allow_extrapolation=allow_extrapolation)
        W = w_rows.numpy()[w_codes].astype(np.float64)
        var = np.zeros_like(pred)
        mixed = np.abs(W).max(axis=1) < 1.0 - 1e-9
        if not mixed.any():
            return var
        for c in np.flatnonzero(np.abs(W[mixed]).sum(axis=0) > 0):
            at_c = self.predict_protein(mdata, time=self.time_categories[c], **kwargs).to_numpy(dtype=np.float64)
            var[mixed] += np.abs(W[mixed, c : c + 1]) * (at_c[mixed] - pred[mixed]) ** 2
        return var

    def _imputation_variance(
        self,
        mdata: MuData,
        pred: np.ndarray,
        *,
        missing_genes: Sequence[str],
        n_imputations: int,
        seed: int,
        **kwargs,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Spread of the prediction when the missing genes are drawn from the training cells' values.

        Returns the mean squared shift of the prediction from ``pred`` and the mean squared local spread
        (:meth:`_level_spread`) over the imputed inputs.
        """
        genes = pd.Index(self.gene_names)
        missing = pd.Index([str(g) for g in missing_genes])
        unknown = missing.difference(genes)
        if len(unknown):
            raise KeyError(f"`missing_genes` holds genes the model does not use: {list(unknown[:5])}.")
        cols = genes.get_indexer(missing.unique())
        if cols.size == 0:
            return np.zeros_like(pred), np.full_like(pred, np.nan)
        sketch = np.asarray((self.uncertainty_ or {}).get("gene_quantiles", np.zeros((0, 0))))
        if sketch.shape[0] == 0:
            raise ValueError(
                "The uncertainty calibration holds no training-cell gene values to impute missing genes "
                "(calibrated without the training data). Calibrate with the training data attached."
            )
        # the query is read (and a raw-count query normalised) one prediction batch at a time
        X, rows = self._rna_rows(mdata)
        grid = np.linspace(0, 1, sketch.shape[0])
        generator = np.random.default_rng(seed)
        var = np.zeros_like(pred)
        local_sq = np.zeros_like(pred)
        for _ in range(n_imputations):
            u = generator.random((X.shape[0], cols.size))
            values = np.empty(u.shape, dtype=np.float32)
            for j, col in enumerate(cols):
                values[:, j] = np.interp(u[:, j], grid, sketch[:, col])
            # cells of `mdata` without RNA get NaN rows, as in `pred`
            draw = self._predict_frame(mdata, rna=RnaInput(FilledColumns(X, cols, values), rows), **kwargs)
            draw = draw.to_numpy(dtype=np.float64)
            var += (draw - pred) ** 2
            local_sq += self._level_spread(draw, self.uncertainty_) ** 2
        return var / n_imputations, local_sq / n_imputations

    def _spread(
        self,
        mdata: MuData,
        *,
        missing_genes: Sequence[str] | None,
        n_imputations: int,
        seed: int,
        time: object = None,
        allow_extrapolation: bool = False,
        **kwargs,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and total spread (cells × proteins) of every cell of ``mdata``."""
        state = self.uncertainty_
        rate = state["dropout_rate"]
        pred, s_mc = self._mc_spread(
            mdata,
            n_samples=int(state["n_samples"]),
            dropout_rate=None if not np.isfinite(rate) else float(rate),
            seed=seed,
            time=time,
            allow_extrapolation=allow_extrapolation,
            **kwargs,
        )
        var_imputation = 0.0
        if missing_genes is not None and len(missing_genes):
            # the level term of a cell whose genes were zeroed is taken at its predictions from imputed expression
            var_imputation, local_sq = self._imputation_variance(
                mdata,
                pred,
                missing_genes=missing_genes,
                n_imputations=n_imputations,
                seed=seed + 1,
                time=time,
                allow_extrapolation=allow_extrapolation,
                **kwargs,
            )
        else:
            local_sq = np.full_like(pred, np.nan)
        if np.isnan(local_sq).all():
            local_sq = self._level_spread(pred, state) ** 2
        s_mc = np.sqrt(s_mc**2 + local_sq)
        sigma = np.asarray(state["scale"]) * np.maximum(s_mc, np.asarray(state["floor"]))
        var = sigma**2 + var_imputation
        # term 3, scaled by leave-one-time-point-out (models calibrated before the scale existed: 1)
        time_scale = float(state.get("time_scale", 1.0))
        if time_scale > 0:
            var += time_scale * self._time_variance(
                mdata, pred, time=time, allow_extrapolation=allow_extrapolation, **kwargs
            )
        return pred, np.sqrt(var)

    def _missing_gene_scores(
        self, missing_genes: Sequence[str], *, n_imputations: int, seed: int, **kwargs
    ) -> np.ndarray | None:
        """Non-conformity scores of the calibration cells with ``missing_genes`` zeroed, as in the query.

        ``None`` when the calibration cells are not available (model without its training data).
        """
        cells = self.uncertainty_.get("calibration_indices")
        if self.adata is None or cells is None or len(cells) == 0:
            return None
        sub = self._cell_subset(self.adata, np.asarray(cells, dtype=np.int64))
        observed = self._observed_proteins(self.adata, sub.obs_names)
        X, rows = self._rna_rows(sub)
        cols = pd.Index(self.gene_names).get_indexer(pd.Index([str(g) for g in missing_genes]))
        X = FilledColumns(X, cols, np.zeros((X.shape[0], cols.size), dtype=np.float32))[: X.shape[0]]
        zeroed = self._with_rna(sub, X)
        pred, std = self._spread(zeroed, missing_genes=missing_genes, n_imputations=n_imputations, seed=seed, **kwargs)
        pred_sub = np.full_like(pred, np.nan)
        std_sub = np.full_like(std, np.nan)
        pred_sub[rows >= 0], std_sub[rows >= 0] = pred[rows[rows >= 0]], std[rows[rows >= 0]]
        return np.abs(observed - pred_sub) / std_sub

    def _cell_subset(self, mdata: MuData, positions: np.ndarray) -> MuData:
        """The cells at ``positions`` of ``mdata`` that have RNA, as a MuData of the RNA modality and covariates.

        Only what prediction reads (the model's RNA modality and its time and batch columns): a copy of
        the whole MuData would copy every modality, and mudata < 0.4 warns that it cannot join the
        columns of genes and proteins of the same name (CD4, CD14) each time.
        """
        import mudata as md

        rna_key = self.get_setup_arg("rna_key")
        rna = get_modality(mdata, rna_key, "CrossmodalNet", role="RNA")
        rows = rna.obs_names.get_indexer(mdata.obs_names[np.asarray(positions, dtype=np.int64)])
        view = rna[np.sort(rows[rows >= 0]) if rna.isbacked else rows[rows >= 0]]
        sub = md.MuData({rna_key: view.to_memory() if rna.isbacked else view.copy()})
        for key in (self.get_setup_arg("time_key"), self.get_setup_arg("batch_key")):
            column = None if key is None else resolve_obs_column(mdata, key)
            if column is not None:
                sub.obs[key] = mdata.obs[column].reindex(sub.obs_names)
        return sub

    def _with_rna(self, mdata: MuData, X: np.ndarray) -> MuData:
        """A MuData with ``X`` (cells of ``mdata[rna_key]`` × model genes) as RNA and ``mdata``'s covariate columns."""
        import anndata as ad
        import mudata as md

        rna_key, layer = self.get_setup_arg("rna_key"), self.get_setup_arg("rna_layer")
        rna = mdata.mod[rna_key]
        adata = ad.AnnData(
            X=X if layer is None else None,
            obs=pd.DataFrame(index=rna.obs_names.copy()),
            var=pd.DataFrame(index=pd.Index(self.gene_names).copy()),
            layers=None if layer is None else {layer: X},
        )
        tmp = md.MuData({rna_key: adata})
        for col in (self.get_setup_arg("time_key"), self.get_setup_arg("batch_key")):
            if col is not None and col in mdata.obs:
                tmp.obs[col] = mdata.obs[col].reindex(tmp.obs_names).to_numpy()
        return tmp

    def _resolve_calibration(self, calibration: str) -> str:
        if calibration != "auto":
            return calibration
        counts = self.uncertainty_.get("n_cells_per_protein")
        fewest = int(np.min(counts)) if counts is not None and len(counts) else int(self.uncertainty_["n_cells"])
        return "protein" if fewest >= _MIN_CELLS_PER_PROTEIN else "pooled"

    def _multiplier(self, level: float, calibration: str, scores: np.ndarray | None = None) -> np.ndarray:
        """Interval multiplier ``k`` of each protein at ``level`` (from the stored scores by default)."""
        scores = np.asarray(self.uncertainty_["scores"] if scores is None else scores, dtype=np.float64)
        calibration = self._resolve_calibration(calibration)
        if calibration == "pooled":
            k = np.full(scores.shape[1], conformal_quantile(scores.ravel(), level))
        else:
            k = np.array([conformal_quantile(scores[:, j], level) for j in range(scores.shape[1])])
        if not np.isfinite(k).all():
            raise ValueError(
                f"{scores.shape[0]} calibration cells are too few for a {level:.0%} interval per protein; "
                "use `calibration='pooled'` or a lower `level`."
            )
        return k

    def _uncertainty_calibrated(self) -> bool:
        """Whether :attr:`uncertainty_` holds a calibration of the current weights."""
        state = self.uncertainty_
        return not (
            state is None or state.get("n_epochs") != self._n_epochs_trained() or "reference_prediction" not in state
        )

    def _ensure_calibrated(self, *, batch_size: int) -> None:
        """Calibrate the uncertainty on the validation cells unless a calibration of the current weights exists."""
        if not self._uncertainty_calibrated():
            if self.adata is None:
                raise ValueError(
                    "The model's uncertainty is not calibrated: call `model.calibrate_uncertainty()` with the "
                    "training data attached (before saving), or `calibrate_uncertainty(mdata, indices=...)` on "
                    "held-out cells with observed proteins."
                )
            logger.info("calibrating the uncertainty on the model's validation cells")
            self.calibrate_uncertainty(batch_size=batch_size)

    def _missing_gene_factor(
        self,
        missing_genes: Sequence[str],
        *,
        level: float,
        calibration: str,
        n_imputations: int,
        seed: int,
        **kwargs,
    ) -> np.ndarray | None:
        """Factor (per protein) of the spread of a query that lacks ``missing_genes``, or ``None``.

        The calibration cells with the same genes zeroed give the interval's multiplier; its ratio to the
        model's multiplier is folded into the spread, so that ``std`` carries the extra uncertainty and the
        multiplier stays the model's. ``None`` (logged) when the calibration cells are not available.
        """
        scores = self._missing_gene_scores(missing_genes, n_imputations=n_imputations, seed=seed, **kwargs)
        if scores is None:
            logger.warning(
                "the model's training data is not attached: intervals of a query with missing genes are "
                "widened by the imputation spread but not recalibrated for the missing genes"
            )
            return None
        return self._multiplier(level, calibration, scores=scores) / self._multiplier(level, calibration)

    def _predict_with_uncertainty(
        self,
        mdata: MuData | None,
        *,
        level: float,
        calibration: Literal["auto", "protein", "pooled"],
        missing_genes: Sequence[str] | None,
        n_imputations: int,
        rng: int | np.random.Generator | None,
        time: object,
        allow_extrapolation: bool,
        missing_factor: np.ndarray | None = None,
        **kwargs,
    ) -> ProteinUncertainty:
        """The body of ``predict_protein(..., return_uncertainty=True)``.

        ``missing_factor``: the factor of :meth:`_missing_gene_factor`, computed once by a caller that predicts
        a query block by block (:func:`~crossmodalnet.tl.predict_atlas`); ``None`` computes it here for
        ``missing_genes``.
        """
        level = check_level(level)
        if calibration not in _CALIBRATIONS:
            raise ValueError(f"`calibration` must be one of {_CALIBRATIONS}, got {calibration!r}.")
        if isinstance(n_imputations, bool) or not isinstance(n_imputations, int) or n_imputations < 1:
            raise ValueError(f"`n_imputations` must be a positive integer, got {n_imputations!r}.")
        if isinstance(missing_genes, str):
            raise TypeError("`missing_genes` must be a sequence of gene names, not one string.")
        self._check_if_trained(warn=False)
        mdata = self._resolve_mdata(mdata)
        self._ensure_calibrated(batch_size=kwargs.get("batch_size", 1024))
        seed = seed_of(rng)
        pred, std = self._spread(
            mdata,
            missing_genes=missing_genes,
            n_imputations=n_imputations,
            seed=seed,
            time=time,
            allow_extrapolation=allow_extrapolation,
            **kwargs,
        )
        k = self._multiplier(level, calibration)
        if missing_factor is None and missing_genes is not None and len(missing_genes):
            missing_factor = self._missing_gene_factor(
                missing_genes, level=level, calibration=calibration, n_imputations=n_imputations, seed=seed, **kwargs
            )
        if missing_factor is not None:
            std = std * missing_factor
        index, columns = mdata.obs_names.copy(), self.protein_names.copy()

        def frame(values: np.ndarray) -> pd.DataFrame:
            return pd.DataFrame(values.astype(np.float32), index=index, columns=columns)

        return ProteinUncertainty(
            mean=frame(pred),
            std=frame(std),
            lower=frame(pred - k * std),
            upper=frame(pred + k * std),
            level=level,
            multiplier=pd.Series(k, index=columns.copy(), name="multiplier"),
            calibration=self._resolve_calibration(calibration),
        )
