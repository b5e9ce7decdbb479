"""Batched reading of a model's input, from memory or from backed (on-disk) matrices, and its covariates."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._streaming import RnaInput
from crossmodalnet._utils import (
    check_current,
    get_layer,
    get_modality,
    query_normalization,
    read_rows,
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


def block_tensor(block, *, allow_sparse: bool, device=None) -> torch.Tensor:
    """A block of rows (dense or sparse, in memory) as a float32 tensor: sparse CSR if allowed, else dense."""
    if sparse.issparse(block):
        block = sparse.csr_matrix(block)
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
            return x if device is None else x.to(device)
        block = block.toarray()
    x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
    return x if device is None else x.to(device)


@dataclass
class PanelDecoding:
    """Which batch embedding decodes a protein that a cell's batch did not measure.

    A batch that never measured a protein has never been trained on it: its embedding's effect on that protein is
    not identifiable. Such proteins are decoded with the average embedding of the batches that measured them.
    ``groups`` holds one entry per set of measuring batches (other than all of them): ``(replace, cols)``, where
    ``replace`` maps a row of the prediction batch table (trained batches, their average, mapped query batches)
    to the row that decodes the proteins ``cols`` (-1: the cell's own), and ``table`` the embeddings of those rows.
    """

    table: torch.Tensor
    groups: list[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def of(cls, counts: np.ndarray | None, batch_table: torch.Tensor) -> PanelDecoding | None:
        """From the proteins × trained batches counts of measured cells; ``None`` when every batch measured every protein."""
        if counts is None:
            return None
        measured = np.asarray(counts) > 0
        n_batches = measured.shape[1]
        if measured.all() or n_batches < 2 or not measured.any(axis=1).all():
            return None
        rows, groups = [], []
        for pattern in np.unique(measured, axis=0):
            if pattern.all():
                continue
            cols = np.flatnonzero((measured == pattern).all(axis=1))
            replace = np.full(batch_table.shape[0], -1, dtype=np.int64)
            # trained batches that did not measure these proteins, and the average row (unseen batches)
            replace[np.flatnonzero(~pattern)] = len(rows)
            replace[n_batches] = len(rows)
            rows.append(batch_table[:n_batches][torch.from_numpy(pattern)].mean(dim=0))
            groups.append((torch.from_numpy(replace), torch.from_numpy(cols)))
        return cls(table=torch.stack(rows), groups=groups)

    def overrides(self, codes: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(cells, embeddings, proteins)`` to decode again, for cells with batch-table rows ``codes``."""
        out = []
        for replace, cols in self.groups:
            new = replace.index_select(0, codes)
            cells = torch.nonzero(new >= 0).flatten()
            if cells.numel():
                out.append((cells, self.table.index_select(0, new.index_select(0, cells)), cols))
        return out


def _decode(module, z, w, b, linear, interpolation: str) -> torch.Tensor:
    table = module.covariate_embeddings[0].weight.detach()
    if interpolation == "embedding":
        return module.generative(z, w @ table + b, linear)["protein"]
    return sum(
        w[:, c : c + 1] * module.generative(z, table[c] + b, linear)["protein"]
        for c in torch.nonzero(w.abs().sum(0)).flatten().tolist()
    )


def forward_protein(
    module,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    interpolation: str,
    overrides: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = (),
) -> torch.Tensor:
    """Predicted proteins of a batch ``x`` with time weights ``w`` (cells × categories) and batch embedding ``b``.

    The one forward pass of prediction, shared by the in-process getters and the dask workers. ``overrides``
    (:meth:`PanelDecoding.overrides`) decode some proteins of some cells with another batch embedding.
    """
    z = module.inference(x)["z"]
    # the linear path is linear in the time weights: both interpolations share it
    linear = module.linear_prediction(x, w) if module.linear_path else None
    out = _decode(module, z, w, b, linear, interpolation)
    for cells, embedding, cols in overrides:
        cells, cols = cells.to(z.device), cols.to(z.device)
        sub = _decode(
            module,
            z.index_select(0, cells),
            w.index_select(0, cells),
            embedding,
            None if linear is None else linear.index_select(0, cells),
            interpolation,
        )
        out[cells.unsqueeze(1), cols.unsqueeze(0)] = sub.index_select(1, cols)
    return out


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

    def _rna_input(self, mdata: MuData) -> RnaInput:
        """RNA matrix of ``mdata`` (with the model's genes) as stored, the row of each cell and its normalisation."""
        rna_key, layer = self.get_setup_arg("rna_key"), self.get_setup_arg("rna_layer")
        rna = get_modality(mdata, rna_key, "CrossmodalNet.predict_protein", role="RNA")
        check_query_genes(pd.Index(rna.var_names.astype(str)), self.gene_names, rna_key)
        X = get_layer(rna, layer, rna_key)
        where = f"mdata[{rna_key!r}]" + (f".layers[{layer!r}]" if layer else ".X")
        target_sum = query_normalization(X, self.rna_normalization, where, "CrossmodalNet")
        return RnaInput(X, rna.obs_names.get_indexer(mdata.obs_names), None, target_sum)

    def _rna_rows(self, mdata: MuData) -> tuple[AnnData | object, np.ndarray]:
        """RNA matrix of ``mdata`` with the model's genes, and the row of each ``mdata`` cell (-1 if none)."""
        rna = self._rna_input(mdata)
        return rna.reader(), rna.rows

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
                yield pos, block_tensor(block, allow_sparse=allow_sparse, device=device)
                continue
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

    @property
    def query_batch_categories(self) -> pd.Index:
        """Batch categories added by :meth:`~crossmodalnet.model.CrossmodalNet.map_query`, in the order of their embedding rows.

        Empty for a model that was not mapped onto a query. Saved with the model (``model.query_``).
        """
        record = getattr(self, "query_", None) or {}
        return pd.Index(np.asarray(record.get("batch_categories", []), dtype=str))

    def _batch_codes(self, mdata: MuData, *, batch: object = None) -> np.ndarray:
        """Row of each cell's batch category (cells,) in :meth:`CrossmodalModule.batch_table`.

        Trained categories first, then the average of the trained embeddings (unseen categories), then
        the categories of a mapped query (:meth:`map_query`).
        """
        n = mdata.n_obs
        batch_key = self.get_setup_arg("batch_key")
        n_trained = len(self.batch_categories)
        # a mapped query's categories come after the average row
        b_cats = pd.Index([*np.asarray(self.batch_categories).astype(str), "\0average", *self.query_batch_categories])
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
            return np.full(n, n_trained, dtype=np.int64)
        lookup = b_cats.get_indexer([str(v) for v in values])
        lookup[lookup == n_trained] = -1  # the average row has no label of its own
        unknown = sorted({str(v) for v, c in zip(values, lookup, strict=True) if c < 0})
        known = [c for i, c in enumerate(b_cats) if i != n_trained]
        if batch is not None and unknown:
            raise ValueError(f"Unknown batch category {batch!r}; pass `batch=` with one of {known}.")
        # a new donor or batch (or a missing value) gets the average of the trained batch embeddings
        lookup = np.append(np.where(lookup < 0, n_trained, lookup), n_trained)
        out = lookup[codes].astype(np.int64)
        n_unseen = int((out == n_trained).sum())
        if n_unseen:
            shown = unknown[:5] + (["<missing>"] if (codes < 0).any() else [])
            logger.warning(
                "%d cell(s) have batch categories the model was not trained on (%s): they get the average embedding "
                "of the trained batches (pass `batch=` to choose one of %s, or map the query with "
                "`model.map_query` if it measured some proteins)",
                n_unseen,
                shown,
                known[:10],
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
        # trained rows, then the average batch embedding (batches not seen in training), then mapped query batches
        b_table = self.module.batch_table()
        w_index = torch.from_numpy(w_codes)
        panels = self._panel_decoding(b_table, batch=batch)

        def of(pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
            # index_select rather than advanced indexing, which is slow on small CPU tensors
            idx = torch.from_numpy(np.asarray(pos, dtype=np.int64))
            w = w_rows.index_select(0, w_index.index_select(0, idx)).to(b_table.device)
            codes = b_codes.index_select(0, idx)
            overrides = [] if panels is None else panels.overrides(codes)
            return w, b_table.index_select(0, codes.to(b_table.device)), overrides

        return of

    def _panel_decoding(self, batch_table: torch.Tensor, *, batch: object = None) -> PanelDecoding | None:
        """How proteins a batch did not measure are decoded (:class:`PanelDecoding`); ``None`` with ``batch=`` given."""
        if batch is not None:  # the user chose the embedding of every cell and protein
            return None
        record = getattr(self, "measured_cells_", None)
        panels = PanelDecoding.of(None if record is None else record["counts"], batch_table.detach().cpu())
        if panels is not None:
            panels.table = panels.table.to(batch_table.device)
        return panels

    def _predict_blocks(
        self,
        mdata: MuData,
        *,
        time: object,
        batch: object,
        batch_size: int,
        allow_extrapolation: bool,
        interpolation: str,
        rna: RnaInput | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Predictions of consecutive blocks of ``mdata``'s cells: ``(first position, block)`` with cells × proteins.

        Each block covers ``chunk_size`` cells of ``mdata`` (all cells for ``None``), read ``batch_size`` rows at a
        time; cells without RNA get NaN rows. Only one block is held at a time.
        """
        if interpolation not in ("embedding", "prediction"):
            raise ValueError(f"`interpolation` must be 'embedding' or 'prediction', got {interpolation!r}.")
        rna = self._rna_input(mdata) if rna is None else rna
        X = rna.reader()
        covariates = self._covariates(mdata, time=time, batch=batch, allow_extrapolation=allow_extrapolation)
        self.module.eval()
        n = mdata.n_obs
        chunk_size = max(n, 1) if chunk_size is None else int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
        for start in range(0, max(n, 1), chunk_size):
            rows = rna.rows[start : start + chunk_size]
            out = np.full((rows.size, self.n_proteins), np.nan, dtype=np.float32)
            with torch.inference_mode():  # not across the yield: the caller's code runs there
                for pos, x in self._iter_batches(X, rows, batch_size, allow_sparse=self.module.sparse_input):
                    w, b, overrides = covariates(pos + start)
                    out[pos] = forward_protein(self.module, x, w, b, interpolation, overrides).cpu().numpy()
            yield start, out

    def _predict_frame(
        self,
        mdata: MuData,
        *,
        time: object,
        batch: object,
        batch_size: int,
        allow_extrapolation: bool,
        interpolation: str,
        rna: RnaInput | None = None,
    ) -> pd.DataFrame:
        """The body of ``predict_protein`` without uncertainty: cells × proteins, NaN rows for cells without RNA."""
        ((_, out),) = self._predict_blocks(
            mdata,
            time=time,
            batch=batch,
            batch_size=batch_size,
            allow_extrapolation=allow_extrapolation,
            interpolation=interpolation,
            rna=rna,
        )
        return pd.DataFrame(out, index=mdata.obs_names.copy(), columns=self.protein_names.copy())

    def _predict_dask(
        self,
        mdata: MuData,
        *,
        time: object,
        batch: object,
        allow_extrapolation: bool,
        interpolation: str,
        rna: RnaInput | None = None,
    ):
        """Lazy predictions (a dask array, cells × proteins) of a MuData whose RNA matrix is a dask array."""
        from ._dask import predict_dask

        if interpolation not in ("embedding", "prediction"):
            raise ValueError(f"`interpolation` must be 'embedding' or 'prediction', got {interpolation!r}.")
        rna = self._rna_input(mdata) if rna is None else rna
        w_rows, w_codes = self._cell_time_weights(mdata, time=time, allow_extrapolation=allow_extrapolation)
        b_table = self.module.batch_table()
        return predict_dask(
            self.module,
            rna,
            time_weights=w_rows,
            time_codes=w_codes,
            batch_table=b_table,
            batch_codes=self._batch_codes(mdata, batch=batch),
            interpolation=interpolation,
            n_proteins=self.n_proteins,
            panels=self._panel_decoding(b_table, batch=batch),
        )

    def _registered_dense(self, registry_key: str, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of a registered matrix, dense float64; proteins with NaN where not measured."""
        block = read_rows(self.adata_manager.get_from_registry(registry_key), np.asarray(idx))
        block = block.toarray().astype(np.float64) if sparse.issparse(block) else np.asarray(block, dtype=np.float64)
        if registry_key == REGISTRY_KEYS.PROTEIN_KEY and self._has_protein_mask():
            block = np.where(self._registered_protein_mask(idx), block, np.nan)
        return block

    def _has_protein_mask(self) -> bool:
        """Whether ``setup_mudata`` registered a ``protein_mask_layer``."""
        return REGISTRY_KEYS.PROTEIN_MASK_KEY in self.adata_manager.data_registry

    def _registered_protein_mask(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the registered boolean mask layer (``True``: measured)."""
        block = read_rows(self.adata_manager.get_from_registry(REGISTRY_KEYS.PROTEIN_MASK_KEY), np.asarray(idx))
        return (block.toarray() if sparse.issparse(block) else np.asarray(block)).astype(bool)

    def _measured_rows(self, prot, matrix, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (increasing) of a protein ``matrix`` of ``prot``, dense; NaN where not measured.

        Not measured: NaN, or ``False`` in the registered ``protein_mask_layer`` when ``prot`` has that layer.
        """
        X = matrix[rows]
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
        mask_layer = self.registry_["setup_args"].get("protein_mask_layer")  # absent in older models
        if mask_layer is None or mask_layer not in prot.layers:
            return X
        mask = prot.layers[mask_layer][rows]
        mask = mask.toarray() if sparse.issparse(mask) else np.asarray(mask)
        return np.where(mask.astype(bool), X.astype(np.float64), np.nan)

    def _registered_proteins(self):
        """The registered protein matrix; with a mask layer, a dense float copy with NaN where not measured."""
        Y = self.adata_manager.get_from_registry(REGISTRY_KEYS.PROTEIN_KEY)
        if not self._has_protein_mask():
            return Y
        return self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, np.arange(Y.shape[0]))

    def _count_measured_cells(self) -> dict:
        """Cells that measured each protein in each batch (the :attr:`measured_cells` record)."""
        Y = self._registered_proteins()
        dense = isinstance(Y, np.ndarray) and Y.dtype.kind == "f"
        measured = ~np.isnan(Y) if dense else None
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY).reshape(-1).astype(np.int64)
        batches = [str(b) for b in self.batch_categories]
        counts = np.zeros((Y.shape[1], len(batches)), dtype=np.int64)
        for b in range(len(batches)):
            in_batch = codes == b
            counts[:, b] = measured[in_batch].sum(axis=0) if measured is not None else int(in_batch.sum())
        return {"proteins": [str(p) for p in self.protein_names], "batches": batches, "counts": counts}

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
            x = read_rows(arrays[REGISTRY_KEYS.X_KEY], rows)
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
