"""Impute proteins for an atlas on disk into an on-disk AnnData, file to file, in memory flat in cells."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crossmodalnet import _keys
from crossmodalnet._docs import docs
from crossmodalnet._utils import (
    announce_once,
    check_level,
    get_layer,
    is_dask_array,
    log_normalize_rows,
    looks_like_counts,
    query_normalization,
    seed_of,
)

from ._predict import _meta, uncertainty_settings
from ._store import check_store_path, write_named_blocks
from ._utils import check_model, log_added, model_input, portable

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Sequence

    from anndata import AnnData

    from crossmodalnet.model import CrossmodalNet

_CALLER = "cmn.tl.predict_atlas"
_MATCHING_LOGGER = "crossmodalnet._gene_matching"
ATLAS_SUFFIXES = (".h5ad", ".zarr")
BLOCK_VALUES = 20_000_000
"""Stored values (non-zeros of a sparse matrix, all of a dense one) a block of the default size holds."""
MAX_BLOCK_CELLS = 50_000


def default_chunk_size(elem) -> int:
    """Cells per block for the matrix element ``elem`` (anndata encoding): about :data:`BLOCK_VALUES` values.

    Between 1,000 and :data:`MAX_BLOCK_CELLS` cells; a sparse matrix's values per cell are estimated from its first
    2,000 rows (CSR) or its mean (CSC).
    """
    encoding = elem.attrs.get("encoding-type", "array")
    if encoding in ("csr_matrix", "csc_matrix"):
        n_obs = int(elem.attrs["shape"][0])
        head = min(n_obs, 2_000)
        if encoding == "csr_matrix":
            per_cell = float(elem["indptr"][head]) / max(head, 1)
        else:
            per_cell = float(elem["data"].shape[0]) / max(n_obs, 1)
    else:
        per_cell = float(elem.shape[1]) if len(elem.shape) > 1 else 1.0
    return int(min(MAX_BLOCK_CELLS, max(1_000, BLOCK_VALUES // max(per_cell, 1.0))))


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The gene matching's info messages (logger ``name``) and missing-gene warnings silenced.

    Every block matches the same genes: the first block reports them, once.
    """
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=rf"{re.escape(_CALLER)}: .* genes are missing from")
            yield
    finally:
        log.setLevel(level)


class _Atlas:
    """An RNA-only AnnData on disk, read block of rows by block of rows.

    Read whole: ``var``, and per cell only numbers (a sparse matrix's row pointers, the time and batch columns).

    Both formats are opened as groups (h5py or zarr), the same way: the matrix through
    :func:`anndata.experimental.read_elem_lazy`, ``var`` and the model's time and batch columns through
    :func:`anndata.io.read_elem` (a number or category code per cell), and the cell names sliced block by block
    from the ``obs`` index (a ``string-array`` or ``nullable-string-array`` of anndata's on-disk format).
    anndata's lazy reader (:func:`anndata.experimental.read_lazy`) reads an ``.h5ad``'s cell names whole (about
    170 bytes per cell measured), and on a ``.zarr`` its ``obs`` block costs 6 s per million cells, a third of
    the prediction's time.
    """

    def __init__(self, path: Path, layer: str | None, columns: Sequence[str], chunk_size: int | None):
        self.layer, self.name, self._file, self.chunk_size = layer, path.name, None, chunk_size
        if path.suffix == ".h5ad":
            import h5py

            self._file = group = h5py.File(path, "r")
        else:
            import zarr

            group = zarr.open_group(path, mode="r")
        try:
            self._open(group, columns)
        except BaseException:
            self.close()
            raise
        self.var.index = pd.Index(self.var.index.astype(str), name=None)
        self.n_obs = int(self.X.shape[0])

    def _lazy_matrix(self, elem):
        import anndata as ad

        if self.chunk_size is None:
            self.chunk_size = default_chunk_size(elem)
        return ad.experimental.read_elem_lazy(elem, chunks=(self.chunk_size, -1))

    def _check_layer(self, layers: list[str]) -> None:
        if self.layer is not None and self.layer not in layers:
            raise KeyError(
                f"{_CALLER}: the model reads the RNA layer {self.layer!r}, which the atlas {self.name} does not "
                f"have (its layers: {sorted(layers)}). Write that layer into the atlas first."
            )

    def _open(self, group, columns: Sequence[str]) -> None:
        import anndata as ad

        self._check_layer(list(group["layers"]) if "layers" in group else [])
        self.X = self._lazy_matrix(group["X"] if self.layer is None else group["layers"][self.layer])
        self.var = ad.io.read_elem(group["var"])
        obs = group["obs"]
        index = obs[obs.attrs["_index"]]
        encoding = index.attrs.get("encoding-type")
        if encoding == "nullable-string-array":
            index = index["values"]
        if encoding in {"string-array", "nullable-string-array"}:
            # h5py reads bytes unless asked for str; zarr reads str
            self._names = index.asstr() if hasattr(index, "asstr") else index
        else:  # another encoding of the index: read whole, as anndata does
            self._names = np.asarray(ad.io.read_elem(index)).astype(str)
        self._columns = {col: ad.io.read_elem(obs[col]) for col in columns if col in obs}

    def block(self, start: int, stop: int) -> AnnData:
        """Rows ``start:stop`` as an in-memory AnnData: the model's matrix, ``obs`` and ``var``."""
        import anndata as ad

        X = self.X[start:stop]
        X = X.compute(scheduler="synchronous") if is_dask_array(X) else X
        names = np.asarray(self._names[start:stop], dtype=object)
        obs = pd.DataFrame({col: values[start:stop] for col, values in self._columns.items()}, index=names)
        obs.index = pd.Index(obs.index.astype(str), name=None)
        if self.layer is None:
            return ad.AnnData(X=X, obs=obs, var=self.var)
        return ad.AnnData(obs=obs, var=self.var, layers={self.layer: X})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@docs.dedent
def predict_atlas(
    path: str | os.PathLike[str],
    model: CrossmodalNet,
    *,
    out: str | os.PathLike[str],
    time: object = None,
    batch: object = None,
    allow_extrapolation: bool = False,
    interpolation: Literal["embedding", "prediction"] = "embedding",
    gene_id_column: str | None = None,
    model_gene_ids: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    batch_size: int = 1024,
    chunk_size: int | None = None,
    uncertainty: bool = False,
    level: float = 0.9,
    rng: int | np.random.Generator | None = 0,
    key_added: str = _keys.PROTEIN,
    overwrite: bool = False,
) -> None:
    """Predict the proteins of every cell of an RNA-only atlas file into an on-disk AnnData, file to file.

    The route for an atlas of 10⁶–10⁷ cells and more on one machine. The atlas is read ``chunk_size`` cells at a
    time, cell names included, so memory stays flat in the number of cells (both formats are opened with h5py or
    zarr and their cell names sliced block by block: anndata's lazy reader reads an ``.h5ad``'s cell names whole;
    docs page *Scale*). Each block goes through
    the same steps as :func:`~crossmodalnet.tl.predict_protein` in memory (gene matching, normalisation of
    raw counts, time and batch from the block's ``obs``), and its predictions and cell names are written to
    ``out`` before the next block is read. The result equals ``cmn.tl.predict_protein(atlas, model)`` on
    the whole atlas in memory. :func:`~crossmodalnet.tl.predict_protein` with ``out=`` does the same for
    an atlas already open (backed or in memory), which holds the atlas's ``obs`` in memory; on a cluster,
    pass it a dask matrix instead (docs page *Scale*).

    Parameters
    ----------
    path
        An RNA-only AnnData on disk: an ``.h5ad`` file or a ``.zarr`` store (dense or sparse ``X``, or the
        model's RNA layer in ``layers``), cells × genes. Time and batch columns, if the model uses them,
        are read from its ``obs`` block by block.
    model
        A trained :class:`~crossmodalnet.model.CrossmodalNet`.
    out
        The ``.zarr`` or ``.h5ad`` file to write: an AnnData with the predictions (cells × proteins,
        float32) in ``X``, the atlas's cell names as ``obs_names``, the model's protein names as
        ``var_names`` and the metadata :func:`~crossmodalnet.tl.predict_protein` records in
        ``uns[key_added]`` (``params``, ``model``, ``protein_names``, ``coverage``, ``genes``; with
        ``uncertainty``, ``uncertainty``: ``level``, ``method``, ``calibration``, ``n_calibration_cells``,
        ``n_calibration_cells_per_protein``, ``levels``, ``multipliers``, ``n_missing_genes``). It is written
        to a temporary path beside ``out`` and renamed at the end, so an error leaves nothing at ``out``.
    time
        Predict every cell at this time point instead of its own ``obs`` value (needed if the atlas's
        ``obs`` has no time column the model knows).
    batch
        Predict every cell as this batch category instead of its own.
    allow_extrapolation
        Allow numeric time points outside the trained range.
    interpolation
        How an unseen time point is predicted: ``"embedding"`` or ``"prediction"``; see
        :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`.
    %(harmonize)s
    %(batch_size)s
    chunk_size
        Cells read from the atlas at a time (two blocks are in memory: one predicted, the next being read).
        ``None``: about 20 million stored values per block (non-zeros of a sparse matrix), at most 50,000 cells
        (50,000 at 2,000 genes and 5 %% non-zeros; 20,000 at 20,000 genes; 1,000 for a dense 20,000-gene matrix).
    uncertainty
        Also write the spread and the central ``level`` interval of every predicted value into ``layers``
        (``"std"``, ``"lower"``, ``"upper"``), block by block, as
        :func:`~crossmodalnet.tl.predict_protein` does with ``uncertainty=True`` in memory: calibrated on the model's
        validation cells (calibrated first if the model has not been; that needs its training data), model
        genes the atlas lacks imputed from the training cells' values, the interval's multiplier for them
        computed once. Each block draws its own MC-dropout masks and imputations: the first block from
        ``rng``, the next from ``rng`` and the block's first cell, so the intervals equal the in-memory
        ones for an atlas of one block and are otherwise other draws of the same spread (the same file,
        ``rng`` and ``chunk_size`` give the same file). It costs ``1 + n_samples`` predictions per cell (the
        calibration's MC-dropout passes: 31 by default), more with missing genes or an interpolated time point.
    level
        With ``uncertainty``: nominal coverage of the interval.
    rng
        With ``uncertainty``: seed or :class:`numpy.random.Generator` of the MC-dropout masks and imputations.
    %(key_added)s
    overwrite
        Replace an existing ``out`` (only once the new one is complete).

    Returns
    -------
    ``None``. Writes ``out``.

    Raises
    ------
    ValueError
        If ``path`` or ``out`` is not an ``.h5ad``/``.zarr``, if ``chunk_size`` or ``batch_size`` is not a
        positive integer, if ``level`` is not between 0 and 1 (with ``uncertainty``), if the model's
        uncertainty is not calibrated and its training data is not attached, or if the atlas's blocks
        disagree on whether they hold raw counts (normalise the whole atlas one way first).
    FileNotFoundError
        If ``path`` does not exist.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    KeyError
        If the model's RNA layer is not in the atlas's ``layers``.

    Examples
    --------
    >>> cmn.tl.predict_atlas("atlas.h5ad", model, out="atlas_proteins.zarr", time=3)
    >>> proteins = anndata.read_zarr("atlas_proteins.zarr")

    With 90%% intervals in ``proteins.layers["lower"]`` and ``proteins.layers["upper"]``:

    >>> cmn.tl.predict_atlas("atlas.h5ad", model, out="atlas_proteins.zarr", uncertainty=True, level=0.9)

    From the shell: ``crossmodalnet predict MODEL atlas.h5ad --out atlas_proteins.zarr``.
    """
    source = Path(path)
    if source.suffix not in ATLAS_SUFFIXES:
        raise ValueError(
            f"{_CALLER}: `path={str(path)!r}` must be an RNA-only AnnData on disk ('.h5ad' or '.zarr'); got "
            f"{source.suffix or 'no extension'!r}. For an .h5mu, use "
            "`cmn.tl.predict_protein(mudata.read_h5mu(path, backed='r'), model, out=...)`."
        )
    if not source.exists():
        raise FileNotFoundError(f"{_CALLER}: the atlas {source} does not exist.")
    target = check_store_path(out, overwrite=overwrite, caller=_CALLER)
    if target.resolve() == source.resolve():
        raise ValueError(f"{_CALLER}: `out` is the atlas itself ({source}); write the predictions elsewhere.")
    for name, value in (("chunk_size", 1 if chunk_size is None else chunk_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{_CALLER}: `{name}` must be a positive integer, got {value!r}.")
    if uncertainty:
        check_level(level)
    model = check_model(model, _CALLER)
    if uncertainty and model.adata is None and not model._uncertainty_calibrated():
        raise ValueError(
            f"{_CALLER}: `uncertainty=True` needs a calibrated model: call `model.calibrate_uncertainty()` with the "
            "training data attached (before saving), or `calibrate_uncertainty(mdata, indices=...)` on held-out "
            "cells with observed proteins."
        )
    predict = {
        "time": time,
        "batch": batch,
        "batch_size": batch_size,
        "allow_extrapolation": allow_extrapolation,
        "interpolation": interpolation,
    }
    match = {"gene_id_column": gene_id_column, "model_gene_ids": model_gene_ids, "min_coverage": min_coverage}
    columns = [c for c in (model.get_setup_arg("time_key"), model.get_setup_arg("batch_key")) if c is not None]
    atlas = _Atlas(source, model.get_setup_arg("rna_layer"), columns, chunk_size)
    params = {
        "path": str(source),
        **predict,
        **{k: v for k, v in match.items() if k != "model_gene_ids"},
        "chunk_size": atlas.chunk_size,  # resolved
        "uncertainty": uncertainty,
        "level": level if uncertainty else None,
        "rng": rng if uncertainty and isinstance(rng, int) else None,
        "key_added": key_added,
        "out": str(target),
    }
    intervals = _Intervals(model, level, rng, predict) if uncertainty else None
    # each block's AnnData and MuData hold reference cycles, collected after the block; frozen, the objects that
    # exist now (the model, the user's session) are not scanned by those collections
    gc.freeze()
    try:
        if atlas.n_obs == 0:
            raise ValueError(f"{_CALLER}: the atlas {source} has no cells.")
        names = pd.Index(np.asarray(model.protein_names).astype(str))
        with announce_once():
            blocks = _predicted_blocks(atlas, model, predict, match, intervals)
            # the first block before anything is written: gene, layer and time errors leave no file behind
            first = next(blocks)
            meta = _meta(model, first[-1], params, list(names))
            if intervals is not None:
                meta["uncertainty"] = intervals.record
            write_named_blocks(
                target,
                (b[:4] for b in itertools.chain([first], blocks)),
                n_obs=atlas.n_obs,
                var_names=names,
                uns={key_added: portable(meta)},
                chunk_rows=batch_size,
                layers=_Intervals.LAYERS if intervals is not None else (),
            )
    finally:
        gc.unfreeze()
        atlas.close()
    log_added(_CALLER, [f"{target} ({atlas.n_obs} cells × {len(names)} proteins, streamed from {source.name})"])


def _read_ahead(atlas: _Atlas) -> Iterator[tuple[int, int, AnnData]]:
    """``(start, stop, block)`` of each block in order; the next block is read in a thread meanwhile.

    Reading (decompression, h5py/zarr) and prediction (torch) release the GIL, so the two overlap: one block
    more is held in memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    chunk_size = atlas.chunk_size
    starts = list(range(0, atlas.n_obs, chunk_size))

    def read(start: int) -> AnnData:
        return atlas.block(start, min(start + chunk_size, atlas.n_obs))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmn-atlas-reader") as pool:
        pending = pool.submit(read, starts[0])
        for i, start in enumerate(starts):
            block = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(read, starts[i + 1])
            yield start, min(start + chunk_size, atlas.n_obs), block
            del block


class _Intervals:
    """The uncertainty of :func:`predict_atlas`'s blocks: one calibration, one seed per block.

    What :func:`~crossmodalnet.tl.predict_protein` computes once for a whole query (the calibration, the
    multiplier's factor for missing genes, the metadata record) is computed on the first block; each block
    then gets its spread and interval with its own seed.
    """

    LAYERS = ("std", "lower", "upper")
    CALIBRATION, N_IMPUTATIONS = "auto", 10  # the defaults of `CrossmodalNet.predict_protein`, as in memory

    def __init__(self, model: CrossmodalNet, level: float, rng, predict: dict):
        self.model, self.level, self.seed, self.predict = model, float(level), seed_of(rng), predict
        self.missing: list[str] | None = None
        self.factor: np.ndarray | None = None
        self.record: dict | None = None

    def block_seed(self, start: int) -> int:
        """``rng`` itself for the block at row 0 (so one block equals the in-memory call), else a derived seed."""
        if start == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed % 2**64, start]).generate_state(1, np.uint64)[0] >> 2)

    def start(self, inp) -> None:
        """Calibrate if needed, then the missing genes' factor and the record, from the first block's input."""
        model, kwargs = self.model, {k: self.predict[k] for k in ("batch", "batch_size", "interpolation")}
        model._ensure_calibrated(batch_size=self.predict["batch_size"])
        self.missing = [] if inp.genes is None else [str(g) for g in inp.genes["filled_genes"]]
        if self.missing:
            factor = model._missing_gene_factor(
                self.missing,
                level=self.level,
                calibration=self.CALIBRATION,
                n_imputations=self.N_IMPUTATIONS,
                seed=self.seed,
                **kwargs,
            )
            # ones: the same spread without recalibration, and no warning per block
            self.factor = np.ones(model.n_proteins) if factor is None else factor
        calibration = model._resolve_calibration(self.CALIBRATION)
        self.record = uncertainty_settings(model, self.level, calibration, len(self.missing))

    def __call__(self, mdata, start: int, cells: pd.Index) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predictions and ``{layer: values}`` of a block's cells (in the order of ``cells``)."""
        predict = dict(self.predict)
        time, allow_extrapolation = predict.pop("time"), predict.pop("allow_extrapolation")
        unc = self.model._predict_with_uncertainty(
            mdata,
            level=self.level,
            calibration=self.CALIBRATION,
            missing_genes=self.missing,
            n_imputations=self.N_IMPUTATIONS,
            rng=self.block_seed(start),
            time=time,
            allow_extrapolation=allow_extrapolation,
            missing_factor=self.factor,
            **predict,
        )
        frames = {"mean": unc.mean, "std": unc.std, "lower": unc.lower, "upper": unc.upper}
        values = {k: v.reindex(cells).to_numpy(dtype=np.float32) for k, v in frames.items()}
        return values.pop("mean"), values


def _predicted_blocks(
    atlas: _Atlas, model: CrossmodalNet, predict: dict, match: dict, intervals: _Intervals | None = None
) -> Iterator[tuple[int, np.ndarray, pd.Index, dict[str, np.ndarray], object]]:
    """``(first row, predictions, cell names, {layer: values}, model input)`` of each block of the atlas, in order.

    Each block takes the in-memory path of :func:`~crossmodalnet.tl.predict_protein`. Whether the atlas holds
    raw counts is decided once, from its first rows, as that path decides for a whole query. With
    ``intervals``, the layers hold the spread and the interval's bounds; otherwise they are empty.
    """
    import crossmodalnet as cmn

    rna_key, layer = model.get_setup_arg("rna_key"), atlas.layer
    where = "the atlas's " + ("X" if layer is None else f"layers[{layer!r}]")
    target_sum = query_normalization(atlas.X, model.rna_normalization, where, _CALLER)
    counts_model = (model.rna_normalization or {}).get("method") == "counts"
    for start, stop, block in _read_ahead(atlas):
        X = get_layer(block, layer, "atlas")
        if target_sum is not None:  # row by row, as the in-memory path normalises a query's rows
            normalised = log_normalize_rows(X, target_sum)
            if layer is None:
                block.X = normalised
            else:
                block.layers[layer] = normalised
        elif not counts_model and looks_like_counts(X[:2000]):
            raise ValueError(
                f"{_CALLER}: cells {start}-{stop - 1} of {atlas.name} look like raw counts, unlike the atlas's first "
                "cells: its rows are not all normalised the same way. Normalise the whole atlas one way (e.g. "
                "`cmn.pp.log_normalize`) and write it again."
            )
        mdata = cmn.pp.to_mudata(block, rna_key=rna_key)
        with contextlib.nullcontext() if start == 0 else _quiet(_MATCHING_LOGGER):  # the matching is logged once
            inp = model_input(mdata, model, rna_key=rna_key, caller=_CALLER, **match)
        if intervals is None:
            pred = model.predict_protein(inp.mdata, **predict).reindex(mdata.obs_names)
            values, layers = pred.to_numpy(dtype=np.float32), {}
        else:
            if start == 0:
                intervals.start(inp)
            values, layers = intervals(inp.mdata, start, mdata.obs_names)
        yield start, values, mdata.obs_names, layers, inp
        del block, mdata, inp, values, layers
        gc.collect()  # free the block's reference cycles before the next block
