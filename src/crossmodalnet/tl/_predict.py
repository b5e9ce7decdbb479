"""Impute surface proteins from RNA into a MuData."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from crossmodalnet import _keys
from crossmodalnet._constants import (
    ALL_CELLS_INCLUDING_TRAINING,
    DEFAULT_PROTEIN_KEY,
    DEFAULT_RNA_KEY,
    NO_TRAINING_CELLS,
)
from crossmodalnet._docs import docs
from crossmodalnet._metrics import pearson_per_protein, prediction_metrics
from crossmodalnet._utils import (
    apply_protein_normalization,
    check_level,
    get_layer,
    is_dask_array,
    looks_like_counts,
    shared_feature_names_quiet,
)

from ._store import check_store_path, write_blocks, write_dask
from ._utils import check_model, log_added, model_info, model_input, portable

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from mudata import MuData

    from crossmodalnet.model import CrossmodalNet

logger = logging.getLogger(__name__)

_CALLER = "cmn.tl.predict_protein"


def _observed(
    model: CrossmodalNet,
    prot,
    layer: str | None,
    protein_key: str,
    cells: pd.Index,
    proteins: list[str],
    *,
    warn: bool = True,
) -> np.ndarray | None:
    """Observed proteins (cells × ``proteins``) on the scale the model predicts, or ``None`` if that cannot be had.

    Raw ADT counts, when the model was trained on transformed proteins, get the transform the model
    recorded (CLR, :attr:`~crossmodalnet.model.CrossmodalNet.protein_normalization`); when it cannot be
    repeated (DSB, an unrecorded transform) there is nothing to compare the predictions with: ``None``
    and, with ``warn``, a warning naming the fix.
    """
    rows = prot.obs_names.get_indexer(cells)
    order = np.argsort(rows, kind="stable")  # backed (HDF5) matrices are read with increasing row indices
    X = model._measured_rows(prot, get_layer(prot, layer, protein_key), rows[order])
    block = np.empty_like(X)
    block[order] = X
    record = model.protein_normalization or {}
    if record.get("method") == "counts" or not looks_like_counts(block):
        return block[:, prot.var_names.get_indexer(proteins)]
    where = f"mdata[{protein_key!r}]" + (f".layers[{layer!r}]" if layer else ".X")
    names = pd.Index(np.asarray(prot.var_names).astype(str))
    transformed = apply_protein_normalization(pd.DataFrame(block, index=cells, columns=names), record)
    if transformed is not None and pd.Index(proteins).isin(transformed.columns).all():
        if warn:
            logger.info(
                "%s: %s looks like raw ADT counts; scoring it after the model's protein transform (CLR across %d "
                "proteins, axis %d, as `cmn.pp.clr`)",
                _CALLER,
                where,
                transformed.shape[1],
                record["axis"],
            )
        return transformed[proteins].to_numpy()
    if warn:
        method = record.get("method", "not recorded")
        why, fix = {
            "dsb": ("DSB needs this data's empty droplets", "`cmn.pp.dsb(mdata, empty=...)`"),
            "clr": (
                f"its CLR was computed over {len(record.get('protein_names', []))} proteins, not all of them here",
                "`cmn.pp.clr(mdata)` over the same proteins",
            ),
        }.get(method, ("the model did not record how", "e.g. `cmn.pp.clr(mdata)` or `cmn.pp.dsb`"))
        warnings.warn(
            f"{_CALLER}: {where} looks like raw ADT counts, but the model was trained on transformed proteins "
            f"({method}) and cannot transform these the same way ({why}): no metrics were computed, as predictions "
            f"and raw counts are not comparable. Normalise the proteins as the training ones were ({fix}) to score them.",
            UserWarning,
            stacklevel=4,
        )
    return None


def _observed_metrics(
    pred: pd.DataFrame,
    mdata: MuData,
    model: CrossmodalNet,
    protein_key: str,
    test_cells: pd.Index | None,
    training_cells: pd.Index | None = None,
) -> dict | None:
    """Metrics against ``mdata[protein_key]`` (in the model's protein layer) where it exists."""
    if protein_key not in mdata.mod:
        return None
    prot = mdata.mod[protein_key]
    layer = model.get_setup_arg("protein_layer")
    if layer is not None and layer not in prot.layers:
        logger.info("%s: no layer %r in mdata[%r]; no metrics computed", _CALLER, layer, protein_key)
        return None
    proteins = [p for p in pred.columns if p in set(prot.var_names)]
    cells = pred.index[pred.notna().all(axis=1).to_numpy()].intersection(prot.obs_names, sort=False)
    n_excluded = 0
    if test_cells is not None:
        cells = cells.intersection(test_cells, sort=False)
        label = "test"
    elif training_cells is not None:
        keep = ~cells.isin(training_cells)
        n_excluded = int((~keep).sum())
        cells = cells[keep]
        label = "test" if n_excluded else NO_TRAINING_CELLS
    else:
        label = ALL_CELLS_INCLUDING_TRAINING
    if n_excluded:
        logger.info("%s: left %d training/validation cells of the model out of the metrics", _CALLER, n_excluded)
    if not proteins or len(cells) < 2:
        return None
    true = _observed(model, prot, layer, protein_key, cells, proteins)
    if true is None:
        return None
    metrics = prediction_metrics(pred.loc[cells, proteins].to_numpy(), true)
    metrics["per_protein"]["protein_names"] = np.asarray(proteins, dtype=str)
    metrics["n_cells"] = len(cells)
    metrics["cells"] = label
    metrics["n_excluded_training_cells"] = n_excluded
    metrics["cell_names"] = np.asarray(cells, dtype=str)
    return metrics


def _measured(
    pred: pd.DataFrame, mdata: MuData, model: CrossmodalNet, protein_key: str
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]] | None:
    """Which predicted values ``mdata[protein_key]`` also measured, and those values on the model's scale.

    Returns ``(mask, observed, ignored)``: a boolean cells × model proteins DataFrame (the query has the
    protein and the value is not NaN), the observed values (NaN where not measured; ``None`` when they
    cannot be put on the model's scale, e.g. raw counts of another transform) and the query's proteins
    the model does not predict. ``None`` without a protein modality or a usable layer.
    """
    if protein_key not in mdata.mod:
        return None
    prot = mdata.mod[protein_key]
    layer = model.get_setup_arg("protein_layer")
    if layer is not None and layer not in prot.layers:
        return None
    names = pd.Index(np.asarray(prot.var_names).astype(str))
    ignored = [p for p in names if p not in set(pred.columns)]
    proteins = [p for p in pred.columns if p in set(names)]
    if ignored:
        logger.info(
            "%s: %d protein(s) of mdata[%r] are not predicted by the model and are not scored: %s",
            _CALLER,
            len(ignored),
            protein_key,
            ignored[:20],
        )
    if not proteins:
        warnings.warn(
            f"{_CALLER}: no protein of `mdata[{protein_key!r}]` ({ignored[:5]}) is one the model predicts "
            f"({list(pred.columns[:5])}): nothing can be scored. Rename the proteins to the model's names "
            "(e.g. `cmn.pp.harmonize_proteins`) to score them.",
            UserWarning,
            stacklevel=3,
        )
    cells = pred.index.intersection(prot.obs_names, sort=False)
    observed = pd.DataFrame(np.nan, index=pred.index, columns=pred.columns)
    mask = pd.DataFrame(np.zeros(pred.shape, dtype=bool), index=pred.index, columns=pred.columns)
    if not proteins or len(cells) == 0:
        return mask, observed, ignored
    raw = _observed_raw(prot, layer, protein_key, cells, proteins, model)
    mask.loc[cells, proteins] = np.isfinite(raw)
    values = _observed(model, prot, layer, protein_key, cells, proteins, warn=False)
    if values is None:
        return mask, None, ignored
    observed.loc[cells, proteins] = np.where(np.isfinite(raw), values, np.nan)
    return mask, observed, ignored


def _observed_raw(
    prot, layer: str | None, protein_key: str, cells: pd.Index, proteins: list[str], model: CrossmodalNet
) -> np.ndarray:
    """The stored values of ``cells`` × ``proteins`` (NaN = not measured, also where the model's mask layer is False)."""
    rows = prot.obs_names.get_indexer(cells)
    order = np.argsort(rows, kind="stable")
    X = model._measured_rows(prot, get_layer(prot, layer, protein_key), rows[order])
    block = np.empty(X.shape, dtype=np.float64)
    block[order] = X
    return block[:, prot.var_names.get_indexer(proteins)]


def _frame_like(values: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    out = values.reindex(pred.index)
    out.columns = pred.columns.copy()
    return out


_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def uncertainty_settings(model: CrossmodalNet, level: float, calibration: str, n_missing_genes: int) -> dict:
    """The part of the ``uncertainty`` record that does not depend on the query's cells.

    ``level``, ``method``, ``calibration``, the calibration cells (in all and per protein), the ``multipliers``
    of a grid of ``levels`` and ``n_missing_genes``.
    """
    levels = sorted({*_LEVELS, float(level)})
    state = model.uncertainty_
    return {
        "level": float(level),
        "method": str(state["method"]),
        "calibration": calibration,
        "n_calibration_cells": int(state["n_cells"]),
        # cells that measured each protein (fewer than n_calibration_cells where panels differ)
        "n_calibration_cells_per_protein": np.asarray(
            state.get("n_cells_per_protein", np.full(model.n_proteins, state["n_cells"])), dtype=np.int64
        ),
        "levels": np.asarray(levels),
        "multipliers": np.vstack([model._multiplier(lv, calibration) for lv in levels]),
        "n_missing_genes": int(n_missing_genes),
    }


def uncertainty_record(
    model: CrossmodalNet,
    unc,
    bounds: dict[str, pd.DataFrame],
    mdata: MuData,
    protein_key: str,
    test_cells: pd.Index | None,
    n_missing_genes: int,
    *,
    training_cells: pd.Index | None = None,
) -> dict:
    """The ``uncertainty`` record of ``.uns[key_added]``: level, multipliers of a grid of levels, observed calibration."""
    record = uncertainty_settings(model, unc.level, unc.calibration, n_missing_genes)
    pred = None
    cells = bounds["std"].index[bounds["std"].notna().all(axis=1).to_numpy()]
    if test_cells is not None:
        cells = cells.intersection(test_cells, sort=False)
    elif training_cells is not None:
        cells = cells.difference(training_cells, sort=False)
    record["eval_indices"] = bounds["std"].index.get_indexer(cells).astype(np.int64)
    if protein_key in mdata.mod and len(cells) >= 2:
        prot = mdata.mod[protein_key]
        layer = model.get_setup_arg("protein_layer")
        proteins = list(bounds["std"].columns)
        if (layer is None or layer in prot.layers) and set(proteins) <= set(prot.var_names):
            true = _observed(model, prot, layer, protein_key, cells, proteins, warn=False)
            if true is None:
                return record
            true = true.astype(np.float64)
            measured = np.isfinite(true)  # NaN: not measured, not scored
            if not measured.any():
                return record
            lo = bounds["lower"].loc[cells].to_numpy(np.float64)
            hi = bounds["upper"].loc[cells].to_numpy(np.float64)
            record["coverage"] = float(((true >= lo) & (true <= hi))[measured].mean())
            if not measured.all():
                return record  # the rank correlation below needs every value
            pred = unc.mean.reindex(cells).to_numpy(np.float64)
            err = np.abs(true - pred)
            spread = bounds["std"].loc[cells].to_numpy(np.float64)
            err_rank, spread_rank = rankdata(err, axis=0), rankdata(spread, axis=0)
            record["spearman"] = pearson_per_protein(spread_rank, err_rank)
    return record


def _add_plottable(mdata: MuData, pred: pd.DataFrame, key_added: str, add_to: str) -> str:
    """Write the predictions as ``obs`` columns or as a modality; return what was added."""
    import anndata as ad

    if add_to == "obs":
        columns = [f"{key_added}_{p}" for p in pred.columns]
        for col, p in zip(columns, pred.columns, strict=True):
            mdata.obs[col] = pred[p].to_numpy()
        return f"mdata.obs[{columns[0]!r}, ...] ({len(columns)} columns)"
    mod = ad.AnnData(
        X=pred.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=pred.index.copy()),
        var=pd.DataFrame(index=pred.columns.copy()),
    )
    mod.uns["cmn_protein"] = {"source": "cmn.tl.predict_protein"}
    mdata.mod[key_added] = mod
    with shared_feature_names_quiet():  # the predicted proteins share names with the measured ones
        mdata.update()
    return f"mdata.mod[{key_added!r}] (cells × proteins)"


def _train_here(
    mdata: MuData,
    *,
    rna_key: str,
    protein_key: str,
    setup_kwargs: Mapping | None,
    model_kwargs: Mapping | None,
    train_kwargs: Mapping | None,
) -> CrossmodalNet:
    from crossmodalnet.model import CrossmodalNet

    if protein_key not in mdata.mod or rna_key not in mdata.mod:
        raise ValueError(
            f"{_CALLER}: no `model` was given, and training one needs RNA and protein modalities "
            f"({rna_key!r}, {protein_key!r}); the MuData has {list(mdata.mod)}. Pass a trained model."
        )
    CrossmodalNet.setup_mudata(mdata, rna_key=rna_key, protein_key=protein_key, **dict(setup_kwargs or {}))
    model = CrossmodalNet(mdata, **dict(model_kwargs or {}))
    model.train(**dict(train_kwargs or {}))
    logger.info("%s: no model given; trained %r on mdata[%r] → mdata[%r]", _CALLER, model, rna_key, protein_key)
    return model


def _meta(model: CrossmodalNet, inp, params: dict, protein_names: list[str]) -> dict:
    """The ``.uns[key_added]`` record without ``metrics`` and ``uncertainty``: params, model, names, coverage."""
    return {
        "params": params,
        "model": model_info(model),
        "protein_names": protein_names,
        "coverage": inp.coverage,
        "genes": inp.genes,
    }


def _predict_out_of_core(
    mdata: MuData,
    model: CrossmodalNet,
    inp,
    path: Path | None,
    kwargs: dict,
    *,
    dask_input: bool,
    params: dict,
    key_added: str,
    copy: bool,
) -> MuData | None:
    """Lazy predictions of a dask RNA matrix, and/or predictions written block by block to the store ``path``."""
    keys = _keys.Keys(key_added)
    names = pd.Index(np.asarray(model.protein_names).astype(str))
    uns = portable(_meta(model, inp, params, list(names)))
    shape = f"{mdata.n_obs} cells × {len(names)} proteins"
    if dask_input:
        lazy = {k: v for k, v in kwargs.items() if k != "batch_size"}
        pred = model._predict_dask(inp.mdata, rna=inp.rna, **lazy)
        if path is None:
            mdata.obsm[keys.obsm] = pred
            added = [f"mdata.obsm[{keys.obsm!r}] (lazy dask array, {shape})"]
        else:
            write_dask(path, pred, obs_names=mdata.obs_names, var_names=names, uns={key_added: uns})
            added = [f"{path} ({shape}, from dask)"]
    else:
        blocks = model._predict_blocks(inp.mdata, rna=inp.rna, chunk_size=kwargs["batch_size"], **kwargs)
        write_blocks(
            path,
            blocks,
            obs_names=mdata.obs_names,
            var_names=names,
            uns={key_added: uns},
            chunk_rows=kwargs["batch_size"],
        )
        added = [f"{path} ({shape}, streamed)"]
    mdata.uns[keys.uns] = uns
    added.append(f"mdata.uns[{keys.uns!r}]")
    log_added(_CALLER, added)
    return mdata if copy else None


@docs.dedent
def predict_protein(
    mdata: MuData,
    model: CrossmodalNet | None = None,
    *,
    rna_key: str = DEFAULT_RNA_KEY,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    time: object = None,
    batch: object = None,
    allow_extrapolation: bool = False,
    interpolation: Literal["embedding", "prediction"] = "embedding",
    gene_id_column: str | None = None,
    model_gene_ids: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    batch_size: int = 1024,
    uncertainty: bool = False,
    level: float = 0.9,
    fill_measured: bool = False,
    rng: int | np.random.Generator | None = 0,
    setup_kwargs: Mapping[str, object] | None = None,
    model_kwargs: Mapping[str, object] | None = None,
    train_kwargs: Mapping[str, object] | None = None,
    key_added: str = _keys.PROTEIN,
    add_to: Literal["obs", "modality"] | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> MuData | None:
    """Predict surface-protein abundance of every cell from its RNA :cite:p:`Yang2023`.

    With a trained ``model`` (e.g. a reference model applied to an RNA-only atlas), its genes are
    matched in ``mdata[rna_key]`` and proteins are predicted for every cell with RNA. With
    ``model=None``, a :class:`~crossmodalnet.model.CrossmodalNet` is first trained with default
    settings on ``mdata[rna_key]`` → ``mdata[protein_key]`` (the tutorial shortcut; it is logged and
    recorded as ``params['trained_here']``).

    For an atlas larger than memory in an ``.h5ad`` or ``.zarr`` file, :func:`~crossmodalnet.tl.predict_atlas`
    goes file to file without holding its cell names. An atlas already open backed (e.g.
    ``mudata.read_h5mu(path, backed="r")``; docs page *Scale*) takes
    ``out="pred.zarr"`` (or ``".h5ad"``): the predictions are then written block by block to an on-disk
    AnnData and never held whole in memory; gene matching and normalisation of the atlas also run block
    by block. When the RNA matrix is a :class:`dask.array.Array` (e.g. from
    :func:`anndata.experimental.read_elem_lazy`), prediction is lazy: one :func:`dask.array.map_blocks`
    task per row block, run by the active dask scheduler, e.g. a ``dask.distributed`` cluster.

    When observed proteins exist for the predicted cells (``mdata[protein_key]``, same cell and
    protein names, in the layer the model was trained on), Pearson and Spearman correlations and the
    MSE are recorded. NaN in ``mdata[protein_key]`` means "not measured" (e.g. a query of several
    antibody panels): only measured values are scored (per protein over the cells that measured it,
    per cell over the proteins it measured), ``obsm[key_added + "_measured"]`` records which predicted
    values were measured, and proteins the model does not predict are ignored (logged; a panel that
    shares no protein with the model gives a warning that nothing can be scored). The model's training and validation cells (:attr:`~crossmodalnet.model.CrossmodalNet.training_cells`,
    saved with the model) are left out by name, on its training data and on any other MuData; when the
    model does not know them, ``metrics['cells']`` says ``"all cells (includes training cells)"``.

    Parameters
    ----------
    %(mdata_query)s
    model
        A trained :class:`~crossmodalnet.model.CrossmodalNet`; ``None`` trains one on ``mdata``.
    %(rna_key)s
    %(protein_key)s Used for training (``model=None``) and for the metrics.
    time
        Predict every cell at this time point instead of its own ``obs`` value (needed if ``mdata.obs``
        has no time column). A numeric time between two trained ones uses the interpolated embedding.
    batch
        Predict every cell as this batch category instead of its own.
    allow_extrapolation
        Allow numeric time points outside the trained range.
    interpolation
        How an unseen time point is predicted: ``"embedding"`` (interpolated time embedding, the paper's)
        or ``"prediction"`` (interpolated predictions of the two neighbouring time points); see
        :meth:`~crossmodalnet.model.CrossmodalNet.predict_protein`.
    %(harmonize)s
    %(batch_size)s
    uncertainty
        Also write the spread and the central ``level`` interval of every predicted value
        (:meth:`~crossmodalnet.model.CrossmodalNet.predict_protein` with ``return_uncertainty=True``,
        calibrated on the model's validation cells). Model genes missing from the query are imputed
        from the training cells' values and widen the intervals.
    level
        With ``uncertainty``: nominal coverage of the interval.
    fill_measured
        Write the measured value where ``mdata[protein_key]`` measured one (the protein is in its panel
        and the value is not NaN) and the prediction elsewhere into ``obsm[key_added]``: a mix of
        measured and predicted values, on the model's scale (raw ADT counts get the model's recorded
        transform, or nothing is filled, with a warning). The pure predictions are then kept in
        ``obsm[key_added + "_predicted"]``, and the metrics always score the pure predictions. Not with
        ``out`` or a dask RNA matrix.
    %(rng)s With ``uncertainty``: MC-dropout masks and imputations.
    setup_kwargs
        With ``model=None``: passed to :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`
        (e.g. ``{"time_key": "time"}``).
    model_kwargs
        With ``model=None``: passed to :class:`~crossmodalnet.model.CrossmodalNet`.
    train_kwargs
        With ``model=None``: passed to :meth:`~crossmodalnet.model.CrossmodalNet.train`.
    %(key_added)s
    add_to
        Also write the predictions where scanpy/muon plotting finds them: ``"obs"`` adds one column
        ``mdata.obs[f"{key_added}_{protein}"]`` per protein (``mu.pl.umap(mdata, color="cmn_protein_CD19")``);
        ``"modality"`` adds ``mdata.mod[key_added]``, an AnnData with cells × proteins in ``.X`` and the
        proteins as ``var`` (``sc.pl.umap(mdata[key_added], color="CD19")`` once it has an embedding).
        ``mdata.obsm[key_added]`` is written in every case, except with ``out``.
    out
        Write the predictions to this ``.zarr`` or ``.h5ad`` file instead of ``mdata.obsm``, block by block
        (``batch_size`` cells at a time), so memory stays bounded by the block whatever the number of cells.
        It holds an AnnData: cells × proteins float32 in ``X`` (NaN rows for cells without RNA),
        ``mdata.obs_names`` as ``obs_names``, the model's protein names as ``var_names`` and the metadata of
        ``mdata.uns[key_added]`` in ``uns[key_added]``; read it with :func:`anndata.read_zarr` or
        :func:`anndata.read_h5ad` (``backed="r"``). It is written to a temporary path beside ``out`` and
        renamed at the end, so an error leaves nothing at ``out``. With a dask RNA matrix, a ``.zarr`` is
        written by the workers (on a cluster, ``out`` must be on a filesystem they all see); an ``.h5ad``
        by this process, from blocks computed on the workers. Not with ``uncertainty`` (for an atlas file,
        :func:`~crossmodalnet.tl.predict_atlas` writes intervals block by block) or ``add_to``; no ``metrics``
        are computed.
    overwrite
        With ``out``: replace an existing file (only once the new one is complete).
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata.obsm[key_added]``
        :class:`~pandas.DataFrame`, cells × proteins, columns = the model's protein names, on the scale
        of the protein layer the model was trained on. Cells without RNA get NaN rows. For a dask RNA
        matrix, a lazy float32 :class:`dask.array.Array` of cells × proteins instead (columns as in
        ``uns[key_added]['protein_names']``; write it with :func:`dask.array.to_zarr` or pass ``out``).
        Not written with ``out``: the predictions are in the file.
    ``mdata.uns[key_added]``
        ``params`` (the arguments, ``trained_here``), ``model`` (class, version, ``n_latent``, keys,
        epochs), ``protein_names``, ``coverage`` (matched / model genes; with ``genes``, the matching
        record, when genes had to be matched) and, with observed proteins, ``metrics``:
        ``pearson_protein``, ``spearman_protein`` (means over proteins), ``pearson_cell``,
        ``spearman_cell`` (means over cells), ``mse``, ``n_cells``, ``cells`` (``"test"``: the model's
        training and validation cells were left out; ``"all (none used in training)"``; or
        ``"all cells (includes training cells)"`` when the model does not know its training cells),
        ``n_excluded_training_cells``, ``cell_names`` (the scored cells) and ``per_protein`` (arrays
        ``pearson``, ``spearman``, ``mse``, ``protein_names``).
        With ``uncertainty=True`` also ``uncertainty``: ``level``, ``method``, ``calibration``,
        ``n_calibration_cells``, ``n_calibration_cells_per_protein`` (the calibration cells that
        measured each protein: fewer where reference panels differ), ``levels`` and ``multipliers`` (levels × proteins, the interval
        multiplier ``k`` of each level, read by :func:`crossmodalnet.pl.calibration`), ``n_missing_genes``,
        ``eval_indices`` (positions of the scored cells) and, with observed proteins, ``coverage``
        (observed fraction inside the interval) and ``spearman`` (per protein, spread vs absolute error).
        With a protein modality, also ``measured``: ``n_values`` (measured values), ``n_cells`` (per
        protein, the cells that measured it), ``protein_names``, ``ignored_proteins`` (the modality's
        proteins the model does not predict) and ``filled``. ``metrics['per_protein']['n_measured']``
        is the number of scored cells of each protein.
    ``mdata.obsm[key_added + "_measured"]``
        With a protein modality in ``mdata``: boolean :class:`~pandas.DataFrame` like ``obsm[key_added]``,
        True where ``mdata[protein_key]`` has the protein and a value that is not NaN for the cell.
    ``mdata.obsm[key_added + "_predicted"]``
        With ``fill_measured=True`` (and something filled): the pure predictions; ``obsm[key_added]`` then
        holds the measured values where measured.
    ``mdata.obsm[key_added + "_std"]``
        With ``uncertainty=True``: :class:`~pandas.DataFrame` like ``obsm[key_added]``, the spread of each value.
    ``mdata.obsm[key_added + "_lower"]``, ``mdata.obsm[key_added + "_upper"]``
        With ``uncertainty=True``: the bounds of the central ``level`` interval.

    Examples
    --------
    >>> query = cmn.pp.to_mudata(rna_only_adata)
    >>> cmn.tl.predict_protein(query, model, time=3)
    >>> query.obsm["cmn_protein"].head()

    An atlas on disk, predicted into an on-disk AnnData:

    >>> atlas = cmn.pp.to_mudata(anndata.read_h5ad("atlas.h5ad", backed="r"))
    >>> cmn.tl.predict_protein(atlas, model, batch_size=4096, out="atlas_proteins.zarr")
    >>> proteins = anndata.read_zarr("atlas_proteins.zarr")
    """
    keys = _keys.Keys(key_added)
    if uncertainty:
        check_level(level)  # before any training or writing
    if add_to not in (None, "obs", "modality"):
        raise ValueError(f"{_CALLER}: `add_to` must be None, 'obs' or 'modality', got {add_to!r}.")
    path = None
    if out is not None:
        path = check_store_path(out, overwrite=overwrite, caller=_CALLER)
        if uncertainty:
            raise ValueError(
                f"{_CALLER}: `uncertainty=True` cannot be written to `out` from an open MuData. For an atlas in an "
                "'.h5ad' or '.zarr' file, `cmn.tl.predict_atlas(path, model, out=..., uncertainty=True)` writes the "
                "intervals block by block; otherwise predict uncertainty for a subset in memory (`mdata[cells].copy()`)."
            )
        if add_to is not None:
            raise ValueError(f"{_CALLER}: `add_to` writes into `mdata` in memory; it cannot be combined with `out`.")
        if fill_measured:
            raise ValueError(
                f"{_CALLER}: `fill_measured=True` writes into `mdata` in memory; it cannot be combined with `out`."
            )
    if add_to == "modality" and key_added in mdata.mod and "cmn_protein" not in mdata.mod[key_added].uns:
        raise ValueError(
            f"{_CALLER}: `mdata` already has a modality {key_added!r} not written by this function; pick another `key_added`."
        )
    trained_here = model is None
    if copy:
        mdata_in, mdata = mdata, mdata.copy()
    else:
        mdata_in = mdata
    if trained_here:
        model = _train_here(
            mdata,
            rna_key=rna_key,
            protein_key=protein_key,
            setup_kwargs=setup_kwargs,
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
        )
    model = check_model(model, _CALLER)
    X = get_layer(mdata.mod[rna_key], model.get_setup_arg("rna_layer"), rna_key) if rna_key in mdata.mod else None
    dask_input = is_dask_array(X)
    if dask_input and fill_measured:
        raise ValueError(
            f"{_CALLER}: `fill_measured=True` is not supported for a dask RNA matrix (lazy predictions); "
            "predict without it, or pass an in-memory or backed MuData."
        )
    if dask_input and uncertainty:
        raise ValueError(
            f"{_CALLER}: `uncertainty=True` is not supported for a dask RNA matrix. Predict without uncertainty, pass "
            "an in-memory or backed MuData, or, for an atlas file, use `cmn.tl.predict_atlas(path, model, out=..., "
            "uncertainty=True)`, which writes the intervals block by block."
        )
    # on-disk and dask matrices are matched and normalised block by block, never copied whole
    streamed = not uncertainty and (
        path is not None or not (X is None or isinstance(X, np.ndarray) or sparse.issparse(X))
    )
    inp = model_input(
        mdata,
        model,
        rna_key=rna_key,
        gene_id_column=gene_id_column,
        model_gene_ids=model_gene_ids,
        min_coverage=min_coverage,
        caller=_CALLER,
        lazy=streamed,
    )
    kwargs = {
        "time": time,
        "batch": batch,
        "batch_size": batch_size,
        "allow_extrapolation": allow_extrapolation,
        "interpolation": interpolation,
    }
    params = {
        "rna_key": rna_key,
        "protein_key": protein_key,
        "time": time,
        "batch": batch,
        "allow_extrapolation": allow_extrapolation,
        "interpolation": interpolation,
        "gene_id_column": gene_id_column,
        "min_coverage": min_coverage,
        "batch_size": batch_size,
        "uncertainty": uncertainty,
        "level": level if uncertainty else None,
        "fill_measured": fill_measured,
        "rng": rng if uncertainty and isinstance(rng, int) else None,
        "setup_kwargs": setup_kwargs,
        "model_kwargs": model_kwargs,
        "train_kwargs": train_kwargs,
        "key_added": key_added,
        "add_to": add_to,
        "out": None if path is None else str(path),
        "trained_here": trained_here,
    }
    if dask_input or path is not None:
        return _predict_out_of_core(
            mdata, model, inp, path, kwargs, dask_input=dask_input, params=params, key_added=key_added, copy=copy
        )
    unc = None
    if uncertainty:
        filled = [] if inp.genes is None else [str(g) for g in inp.genes["filled_genes"]]
        unc = model.predict_protein(
            inp.mdata, **kwargs, return_uncertainty=True, level=level, missing_genes=filled, rng=rng
        )
        pred = unc.mean
    elif inp.rna is not None:  # a backed matrix with other genes, matched block by block
        pred = model._predict_frame(inp.mdata, rna=inp.rna, **kwargs)
    else:
        pred = model.predict_protein(inp.mdata, **kwargs)
    pred = pred.reindex(mdata.obs_names)
    pred.columns = pd.Index(pred.columns.astype(str))
    pred.columns.name = None

    # Scoring the model's own training cells would flatter it: on its training data, score its test cells.
    training_data = getattr(model, "adata", None)
    test_cells = None
    if (
        model.training_cells is None
        and training_data is not None
        and (training_data is mdata or training_data is mdata_in)
    ):
        test_idx = getattr(model, "test_indices", None)
        if test_idx is not None and len(test_idx):
            test_cells = training_data.obs_names[np.asarray(test_idx, dtype=np.int64)]
    training_cells = model.training_cells if test_cells is None else None
    metrics = _observed_metrics(pred, mdata, model, protein_key, test_cells, training_cells)
    bounds = None
    if unc is not None:
        bounds = {name: _frame_like(getattr(unc, name), pred) for name in ("std", "lower", "upper")}
        n_filled = 0 if inp.genes is None else len(inp.genes["filled_genes"])
        uncertainty_meta = uncertainty_record(
            model, unc, bounds, mdata, protein_key, test_cells, n_filled, training_cells=training_cells
        )

    meta = _meta(model, inp, params, list(pred.columns))
    meta["metrics"] = metrics
    meta["uncertainty"] = None if unc is None else uncertainty_meta
    measured = _measured(pred, mdata, model, protein_key)
    written = pred
    if measured is not None:
        mask, observed, ignored = measured
        filled = fill_measured and observed is not None and bool(mask.to_numpy().any())
        if fill_measured and observed is None:
            warnings.warn(
                f"{_CALLER}: `fill_measured=True`, but the measured proteins of `mdata[{protein_key!r}]` cannot be "
                "put on the model's scale (see `model.protein_normalization`): nothing was filled. Normalise them as "
                "the training proteins were (e.g. `cmn.pp.clr`).",
                UserWarning,
                stacklevel=2,
            )
        if filled:
            written = pred.where(~mask, observed)
        meta["measured"] = {
            "n_values": int(mask.to_numpy().sum()),
            "n_cells": mask.sum(axis=0).to_numpy(np.int64),
            "protein_names": list(pred.columns),
            "ignored_proteins": list(ignored),
            "filled": filled,
        }
    mdata.obsm[keys.obsm] = written
    added = [f"mdata.obsm[{keys.obsm!r}] ({pred.shape[0]} cells × {pred.shape[1]} proteins)"]
    if measured is not None:
        mdata.obsm[keys.obsm_measured] = mask
        added.append(f"mdata.obsm[{keys.obsm_measured!r}]")
        if meta["measured"]["filled"]:
            mdata.obsm[keys.obsm_predicted] = pred
            added.append(f"mdata.obsm[{keys.obsm_predicted!r}] (predictions; measured values in obsm[{keys.obsm!r}])")
    if bounds is not None:
        for slot, name in ((keys.obsm_std, "std"), (keys.obsm_lower, "lower"), (keys.obsm_upper, "upper")):
            mdata.obsm[slot] = bounds[name]
            added.append(f"mdata.obsm[{slot!r}]")
    mdata.uns[keys.uns] = portable(meta)
    added.append(f"mdata.uns[{keys.uns!r}]")
    if add_to is not None:
        added.append(_add_plottable(mdata, written, key_added, add_to))
    log_added(_CALLER, added)
    if metrics is not None:
        logger.info(
            "%s: on %d %s cells: Pearson per protein %.3f, per cell %.3f; MSE %.3f",
            _CALLER,
            metrics["n_cells"],
            metrics["cells"],
            metrics["pearson_protein"],
            metrics["pearson_cell"],
            metrics["mse"],
        )
    return mdata if copy else None
