"""Prediction of a dask RNA matrix: one lazy task per row block, with a small predictor shipped to the workers.

The predictor holds the network (the module's weights, no data), the covariate tables and how a block of
stored rows becomes the model's input (normalisation, gene matching). Per-cell covariates travel as a
dask array of integer codes chunked like the RNA rows, so nothing of size cells × features is built on
the client. The same graph runs on the threaded scheduler, a ``LocalCluster`` or a multi-machine cluster.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import sparse

from crossmodalnet._streaming import RnaInput

from ._inference import PanelDecoding, block_tensor, forward_protein

if TYPE_CHECKING:
    import dask.array as da

    from crossmodalnet.module import CrossmodalModule

logger = logging.getLogger(__name__)


@dataclass
class BlockPredictor:
    """Everything a worker needs to predict a block of RNA rows; pickled once per worker, not per task."""

    module: CrossmodalModule
    """The trained network on the CPU, in evaluation mode."""
    time_weights: torch.Tensor
    """Distinct time-weight rows (k × time categories); a cell's code picks its row."""
    batch_table: torch.Tensor
    """Batch embeddings (categories + 1 × d); the last row is their mean, for unseen batches."""
    interpolation: str
    """``"embedding"`` or ``"prediction"`` (see ``CrossmodalNet.predict_protein``)."""
    panels: PanelDecoding | None
    """Which embedding decodes a protein a cell's batch did not measure (``None``: the cell's own)."""
    rna: RnaInput
    """Normalisation and gene matching of a block (its ``X`` and ``rows`` are dropped before shipping)."""

    def __call__(self, block, codes: np.ndarray) -> np.ndarray:
        """Predicted proteins (rows × proteins, float32) of ``block`` with covariate ``codes`` (rows × 2)."""
        if block.shape[0] == 0:
            return np.zeros((0, self.module.n_output), dtype=np.float32)
        if not sparse.issparse(block):
            block = np.asarray(block)
        x = block_tensor(self.rna.transform(block), allow_sparse=self.module.sparse_input)
        idx = torch.from_numpy(np.asarray(codes, dtype=np.int64))
        w = self.time_weights.index_select(0, idx[:, 0])
        b = self.batch_table.index_select(0, idx[:, 1])
        with torch.inference_mode():
            overrides = [] if self.panels is None else self.panels.overrides(idx[:, 1])
            out = forward_protein(self.module, x, w, b, self.interpolation, overrides)
            return out.numpy().astype(np.float32, copy=False)


def _predict_block(block, codes, predictor: BlockPredictor) -> np.ndarray:
    return predictor(block, codes)


def predict_dask(
    module: CrossmodalModule,
    rna: RnaInput,
    *,
    time_weights: torch.Tensor,
    time_codes: np.ndarray,
    batch_table: torch.Tensor,
    batch_codes: np.ndarray,
    interpolation: str,
    n_proteins: int,
    panels: PanelDecoding | None = None,
) -> da.Array:
    """Lazy cells × proteins predictions of the dask matrix ``rna.X`` (float32, chunked like its rows).

    Every cell must have a row, in the MuData's order (``rna.rows`` is ``0 … n - 1``).
    """
    import dask
    import dask.array as da

    X = rna.X
    n = X.shape[0]
    if not np.array_equal(rna.rows, np.arange(n)):
        raise ValueError(
            "A dask RNA matrix is predicted row block by row block, so the RNA modality must hold the MuData's "
            "cells in the same order (an RNA-only MuData from `cmn.pp.to_mudata(adata)` does). Subset and order "
            "the MuData to its RNA cells first, e.g. `mdata = mdata[mdata['rna'].obs_names]`."
        )
    if X.ndim != 2 or X.numblocks[1] != 1:
        logger.info("rechunking the dask RNA matrix to one block of genes per row block (%d genes)", X.shape[1])
        X = X.rechunk({1: -1})
    net = copy.deepcopy(module).cpu().eval()
    predictor = BlockPredictor(
        module=net,
        time_weights=time_weights.detach().cpu(),
        batch_table=batch_table.detach().cpu(),
        interpolation=interpolation,
        panels=None if panels is None else PanelDecoding(panels.table.detach().cpu(), panels.groups),
        rna=RnaInput(X=None, rows=np.zeros(0, dtype=np.int64), gene_index=rna.gene_index, target_sum=rna.target_sum),
    )
    codes = np.column_stack([np.asarray(time_codes, dtype=np.int64), np.asarray(batch_codes, dtype=np.int64)])
    codes = da.from_array(codes, chunks=(X.chunks[0], 2))
    # one graph key for the predictor: shipped once to each worker, not embedded in every task
    shipped = dask.delayed(predictor, pure=True, traverse=False)
    return da.map_blocks(
        _predict_block,
        X,
        codes,
        shipped,
        chunks=(X.chunks[0], (n_proteins,)),
        dtype=np.float32,
        meta=np.empty((0, 0), dtype=np.float32),
        token="cmn-predict-protein",
    )
