"""Batched reading of a model's input, from memory or from backed (on-disk) matrices, and its covariates."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._utils import (
    NormalizedRows,
    check_current,
    get_layer,
    get_modality,
    query_normalization,
    resolve_obs_column,
)

from ._validation import check_query_genes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anndata import AnnData

logger = logging.getLogger(__name__)


def _factorize(values: pd.Series) -> tuple[np.ndarray, list]:
    """Integer code of each value (-1 for missing) and the distinct values present, without per-cell strings."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64), list(uniques)


class BatchedInferenceMixin:
    """Read a model's input in batches of cells, with each cell's time weights and batch embedding."""

    def _resolve_mdata(self, mdata: MuData | None) -> MuData:
        if mdata is None:
            if self.adata is None:
                raise ValueError("This model was loaded without data: pass `mdata` to predict on.")
            mdata = self.adata
        if not isinstance(mdata, MuData):
            raise TypeError(
                f"Expected a MuData, got {type(mdata).__name__}. Wrap an RNA-only AnnData with "
                "`cmn.pp.to_mudata(adata)`."
            )
        if mdata is self.adata:
            self._check_registered_data("CrossmodalNet")
        else:
            check_current(mdata, "CrossmodalNet")
        return mdata

    def _rna_rows(self, mdata: MuData) -> tuple[AnnData | object, np.ndarray]:
        """RNA matrix of ``mdata`` with the model's genes, and the row of each ``mdata`` cell (-1 if none)."""
        rna_key, layer = self.get_setup_arg("rna_key"), self.get_setup_arg("rna_layer")
        rna = get_modality(mdata, rna_key, "CrossmodalNet.predict_protein", role="RNA")
        check_query_genes(pd.Index(rna.var_names.astype(str)), self.gene_names, rna_key)
        X = get_layer(rna, layer, rna_key)
        where = f"mdata[{rna_key!r}]" + (f".layers[{layer!r}]" if layer else ".X")
        target_sum = query_normalization(X, self.rna_normalization, where, "CrossmodalNet")
        if target_sum is not None:
            X = NormalizedRows(X, target_sum)
        rows = rna.obs_names.get_indexer(mdata.obs_names)
        return X, rows

    def _iter_batches(
        self, X, rows: np.ndarray, batch_size: int, *, allow_sparse: bool = False
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (positions in ``rows``, float32 tensor) for cells that have RNA.

        The tensor is dense, or sparse CSR when ``allow_sparse`` and the matrix is sparse; only one
        batch of rows is read (and densified) at a time, also from backed matrices.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        have = np.flatnonzero(rows >= 0)
        device = self.device
        for start in range(0, have.size, batch_size):
            pos = have[start : start + batch_size]
            idx = rows[pos]
            order = np.argsort(idx, kind="stable")  # backed HDF5 matrices need increasing row indices
            sorted_idx = idx[order]
            in_order = bool((order[1:] > order[:-1]).all())
            if sorted_idx[-1] - sorted_idx[0] + 1 == sorted_idx.size:
                # contiguous rows (the usual case): one slice read instead of a row list (backed data)
                block = X[int(sorted_idx[0]) : int(sorted_idx[-1]) + 1]
            else:
                block = X[sorted_idx]
            if sparse.issparse(block):
                block = sparse.csr_matrix(block)
                if not in_order:
                    block = block[np.argsort(order, kind="stable")]
                if allow_sparse and block.nnz < np.iinfo(np.int32).max:
                    block.sort_indices()
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
                        x = torch.sparse_csr_tensor(
                            torch.from_numpy(block.indptr.astype(np.int32, copy=False)),
                            torch.from_numpy(block.indices.astype(np.int32, copy=False)),
                            torch.from_numpy(block.data.astype(np.float32, copy=False)),
                            size=block.shape,
                        )
                    yield pos, x.to(device)
                    continue
                dense = block.toarray().astype(np.float32, copy=False)
            else:
                dense = np.empty(np.shape(block), dtype=np.float32)
                if in_order:
                    dense[...] = np.asarray(block)
                else:
                    dense[order] = np.asarray(block)
            yield pos, torch.from_numpy(dense).to(device)

    def _cell_time_weights(
        self, mdata: MuData, *, time: object = None, allow_extrapolation: bool = False
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Weights over the time categories: distinct rows (k × categories) and each cell's row (cells,).

        Trained time points give one-hot rows. Nothing of size cells × d is built, so memory stays
        bounded by the prediction batch on atlases of millions of cells.
        """
        n = mdata.n_obs
        time_key = self.get_setup_arg("time_key")
        if time is not None:
            codes, values = np.zeros(n, dtype=np.int64), [time]
        elif time_key is None:
            codes, values = np.zeros(n, dtype=np.int64), [self.time_categories[0]]
        elif resolve_obs_column(mdata, time_key) is not None:
            codes, values = _factorize(mdata.obs[resolve_obs_column(mdata, time_key)])
            if (codes < 0).any():
                raise ValueError(f"`mdata.obs[{time_key!r}]` has missing values; pass `time=` or fill them.")
        else:
            in_mods = [mod for mod, a in mdata.mod.items() if time_key in a.obs.columns]
            pull = (
                f" (`mdata[{in_mods[0]!r}].obs` has one: `mdata.pull_obs([{time_key!r}], mods=[{in_mods[0]!r}])` "
                "makes it the query's time)"
                if in_mods
                else ""
            )
            raise KeyError(
                f"`mdata.obs` has no time column {time_key!r}{pull}; pass `time=` to predict every cell at one "
                "time point."
            )
        table = np.vstack([self._time_weights(v, allow_extrapolation=allow_extrapolation) for v in values])
        return torch.as_tensor(table, dtype=torch.float32), codes

    def _batch_codes(self, mdata: MuData, *, batch: object = None) -> np.ndarray:
        """Code of each cell's batch category (cells,)."""
        n = mdata.n_obs
        batch_key = self.get_setup_arg("batch_key")
        b_cats = pd.Index(self.batch_categories.astype(str))
        if batch is not None:
            codes, values = np.zeros(n, dtype=np.int64), [batch]
        elif batch_key is None:
            codes, values = np.zeros(n, dtype=np.int64), [b_cats[0]]
        elif resolve_obs_column(mdata, batch_key) is not None:
            codes, values = _factorize(mdata.obs[resolve_obs_column(mdata, batch_key)])
        else:
            logger.warning(
                "`mdata.obs` has no batch column %r: every cell gets the average embedding of the trained batches "
                "%s (pass `batch=` to choose one)",
                batch_key,
                b_cats.tolist()[:10],
            )
            return np.full(n, len(b_cats), dtype=np.int64)
        lookup = b_cats.get_indexer([str(v) for v in values])
        unknown = sorted({str(v) for v, c in zip(values, lookup, strict=True) if c < 0})
        if batch is not None and unknown:
            raise ValueError(f"Unknown batch category {batch!r}; pass `batch=` with one of {b_cats.tolist()}.")
        # a new donor or batch (or a missing value) gets the average of the trained batch embeddings
        lookup = np.append(np.where(lookup < 0, len(b_cats), lookup), len(b_cats))
        out = lookup[codes].astype(np.int64)
        n_unseen = int((out == len(b_cats)).sum())
        if n_unseen:
            shown = unknown[:5] + (["<missing>"] if (codes < 0).any() else [])
            logger.warning(
                "%d cell(s) have batch categories the model was not trained on (%s): they get the average embedding "
                "of the trained batches (pass `batch=` to choose one of %s)",
                n_unseen,
                shown,
                b_cats.tolist()[:10],
            )
        return out

    def _covariates(
        self,
        mdata: MuData,
        *,
        time: object = None,
        batch: object = None,
        allow_extrapolation: bool = False,
    ) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]:
        """Validate the covariates of ``mdata`` once and return a per-batch lookup.

        The returned function gives, for cell positions, their time weights (cells × categories)
        and batch embedding (cells × d).
        """
        w_rows, w_codes = self._cell_time_weights(mdata, time=time, allow_extrapolation=allow_extrapolation)
        b_codes = torch.from_numpy(self._batch_codes(mdata, batch=batch))
        b_table = self.module.covariate_embeddings[1].weight.detach()
        # last row: the average batch embedding, for batches not seen in training
        b_table = torch.cat([b_table, b_table.mean(dim=0, keepdim=True)])
        w_index = torch.from_numpy(w_codes)

        def of(pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            # index_select rather than advanced indexing, which is slow on small CPU tensors
            idx = torch.from_numpy(np.asarray(pos, dtype=np.int64))
            w = w_rows.index_select(0, w_index.index_select(0, idx)).to(b_table.device)
            return w, b_table.index_select(0, b_codes.index_select(0, idx).to(b_table.device))

        return of

    def _predict_frame(
        self,
        mdata: MuData,
        *,
        time: object,
        batch: object,
        batch_size: int,
        allow_extrapolation: bool,
        interpolation: str,
        rna: tuple[object, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """The body of ``predict_protein`` without uncertainty: cells × proteins, NaN rows for cells without RNA.

        ``rna``: the RNA matrix and the row of each ``mdata`` cell to read instead of :meth:`_rna_rows`
        of ``mdata`` (the covariates still come from ``mdata``), e.g. a query with imputed genes.
        """
        if interpolation not in ("embedding", "prediction"):
            raise ValueError(f"`interpolation` must be 'embedding' or 'prediction', got {interpolation!r}.")
        X, rows = self._rna_rows(mdata) if rna is None else rna
        covariates = self._covariates(mdata, time=time, batch=batch, allow_extrapolation=allow_extrapolation)
        table = self.module.covariate_embeddings[0].weight.detach()
        self.module.eval()
        out = np.full((mdata.n_obs, self.n_proteins), np.nan, dtype=np.float32)
        for pos, x in self._iter_batches(X, rows, batch_size, allow_sparse=self.module.sparse_input):
            z = self.module.inference(x)["z"]
            w, b = covariates(pos)
            # the linear path is linear in the time weights: both interpolations share it
            linear = self.module.linear_prediction(x, w) if self.module.linear_path else None
            if interpolation == "embedding":
                pred = self.module.generative(z, w @ table + b, linear)["protein"]
            else:
                pred = sum(
                    w[:, c : c + 1] * self.module.generative(z, table[c] + b, linear)["protein"]
                    for c in torch.nonzero(w.abs().sum(0)).flatten().tolist()
                )
            out[pos] = pred.cpu().numpy()
        return pd.DataFrame(out, index=mdata.obs_names.copy(), columns=self.protein_names.copy())

    def _registered_dense(self, registry_key: str, idx: np.ndarray) -> np.ndarray:
        block = self.adata_manager.get_from_registry(registry_key)[np.asarray(idx)]
        return block.toarray().astype(np.float64) if sparse.issparse(block) else np.asarray(block, dtype=np.float64)

    @torch.no_grad()
    def _predict_registered(self, idx: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Predictions (original scale) of registered cells at their own time point and batch, in eval mode."""
        was_training = self.module.training
        self.module.eval()
        keys = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.TIME_KEY, REGISTRY_KEYS.BATCH_KEY)
        arrays = {k: self.adata_manager.get_from_registry(k) for k in keys}
        out = []
        for start in range(0, idx.size, chunk):
            rows = idx[start : start + chunk]
            x = arrays[REGISTRY_KEYS.X_KEY][rows]
            x = x.toarray() if sparse.issparse(x) else np.asarray(x)
            tensors = {REGISTRY_KEYS.X_KEY: torch.as_tensor(x, dtype=torch.float32, device=self.device)}
            for k in keys[1:]:
                tensors[k] = torch.as_tensor(np.asarray(arrays[k])[rows], device=self.device)
            z = self.module.inference(tensors[REGISTRY_KEYS.X_KEY])["z"]
            cov = self.module.covariate_embedding_from_tensors(tensors)
            pred = self.module.generative(z, cov, self.module.linear_from_tensors(tensors))["protein"]
            out.append(pred.cpu().numpy())
        self.module.train(was_training)
        return np.vstack(out) if out else np.zeros((0, self.n_proteins), dtype=np.float32)

    def _validation_score(self, val_idx: np.ndarray, monitor: str) -> float:
        """The early-stopping score of the current module on the validation cells."""
        from crossmodalnet._metrics import pearson_per_cell, pearson_per_protein

        pred = self._predict_registered(np.asarray(val_idx)).astype(np.float64)
        true = self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, val_idx)
        score = pearson_per_protein if monitor == "pearson_protein_validation" else pearson_per_cell
        return float(np.nanmean(score(pred, true)))
