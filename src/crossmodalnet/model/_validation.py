"""Input checks of the model: the MuData given to ``setup_mudata``, query genes and a given data split."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

from crossmodalnet._utils import (
    check_aligned_cells,
    check_current,
    check_finite,
    check_unique_names,
    detect_control_features,
    get_layer,
    get_modality,
    looks_like_counts,
    missing_obs_column_message,
    resolve_obs_column,
    zero_variance_columns,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from mudata import MuData

logger = logging.getLogger(__name__)


def validate_setup(
    mdata: MuData,
    *,
    rna_key: str,
    protein_key: str,
    rna_layer: str | None,
    protein_layer: str | None,
    time_key: str | None,
    batch_key: str | None,
    protein_mask_layer: str | None = None,
    caller: str = "CrossmodalNet.setup_mudata",
) -> dict[str, str]:
    """Check a CITE-seq MuData before registration; raise on what cannot be trained on, warn on the doubtful.

    Errors: not a MuData, missing modality or layer, a modality replaced without ``mdata.update()``,
    cells not aligned, duplicated names, non-finite
    values, a missing covariate column or missing covariate values. Warnings (:class:`UserWarning`):
    raw counts, isotype controls or hashtags among the proteins, constant proteins, proteins constant (e.g. all
    zero) in a whole batch or time point. Nothing is written.

    Parameters
    ----------
    mdata
        The MuData to register.
    rna_key, protein_key, rna_layer, protein_layer, time_key, batch_key, protein_mask_layer
        The arguments of :meth:`~crossmodalnet.model.CrossmodalNet.setup_mudata`.
    caller
        Name shown in the error messages.

    Returns
    -------
    The ``mdata.obs`` column of each given covariate (``"time_key"``, ``"batch_key"``), after resolving
    aliases.
    """
    from mudata import MuData

    if not isinstance(mdata, MuData):
        raise TypeError(f"{caller} expects a MuData with RNA and protein modalities, got {type(mdata).__name__}.")
    rna = get_modality(mdata, rna_key, caller, role="RNA")
    prot = get_modality(mdata, protein_key, caller, role="protein")
    check_current(mdata, caller)
    check_aligned_cells(mdata, [rna_key, protein_key])
    check_unique_names(rna.var_names, "gene", rna_key)
    check_unique_names(prot.var_names, "protein", protein_key)
    X_rna = get_layer(rna, rna_layer, rna_key)
    X_prot = get_layer(prot, protein_layer, protein_key)
    check_finite(X_rna, f"mdata[{rna_key!r}]", rna_layer)
    if protein_mask_layer is not None:  # from here on, what the mask leaves out is NaN: not measured
        mask = checked_protein_mask(prot, X_prot, protein_mask_layer, protein_key)
        X_prot = np.where(mask, np.asarray(X_prot.toarray() if hasattr(X_prot, "toarray") else X_prot, float), np.nan)
    check_proteins_measured(X_prot, prot.var_names, protein_key, protein_layer)
    # stacklevel 3: the user's call of setup_mudata
    if looks_like_counts(X_rna):
        warnings.warn(
            f"mdata[{rna_key!r}] {'layer ' + repr(rna_layer) if rna_layer else '.X'} looks like raw counts; "
            "CrossmodalNet expects log-normalised RNA (run `cmn.pp.log_normalize(mdata)` first).",
            UserWarning,
            stacklevel=3,
        )
    if looks_like_counts(X_prot):
        warnings.warn(
            f"mdata[{protein_key!r}] {'layer ' + repr(protein_layer) if protein_layer else '.X'} looks like raw "
            "ADT counts; CrossmodalNet expects normalised proteins (run `cmn.pp.clr(mdata)` or `cmn.pp.dsb`).",
            UserWarning,
            stacklevel=3,
        )
    isotypes, hashtags = detect_control_features(prot.var)
    if isotypes or hashtags:
        found = ([f"isotype controls {isotypes[:5]}"] if isotypes else []) + (
            [f"hashtags (HTO) {hashtags[:5]}"] if hashtags else []
        )
        warnings.warn(
            f"mdata[{protein_key!r}] holds {' and '.join(found)}: they would become prediction targets (a "
            "hashtag is predicted through the batch covariate, not from RNA) and lower the mean per-protein "
            "Pearson. Remove them before setup: `cmn.pp.dsb` sets isotypes aside, or "
            f"`cmn.pp.drop_proteins(mdata, names, protein_key={protein_key!r})`; "
            "demultiplex hashtags into an `obs` column first (e.g. for `batch_key`).",
            UserWarning,
            stacklevel=3,
        )
    constant = zero_variance_columns(X_prot)
    if constant.any():
        warnings.warn(
            f"{int(constant.sum())} protein(s) are constant across cells ({prot.var_names[constant][:5].tolist()}); "
            "their Pearson correlation is undefined and they are left out of the per-protein means.",
            UserWarning,
            stacklevel=3,
        )
    columns = {}
    for key, what in ((time_key, "time_key"), (batch_key, "batch_key")):
        if key is None:
            continue
        column = resolve_obs_column(mdata, key)
        if column is None:
            raise KeyError(missing_obs_column_message(mdata, key, what))
        if column != key:
            logger.info("%s: `%s=%r` is read from `mdata.obs[%r]`", caller, what, key, column)
        columns[what] = key = column
        n_missing = int(mdata.obs[key].isna().sum())
        if n_missing:
            raise ValueError(
                f"`mdata.obs[{key!r}]` has {n_missing} missing value(s) of {mdata.n_obs}; fill or drop those cells first."
            )
    _warn_constant_in_groups(mdata, prot, X_prot, columns, constant, protein_key=protein_key)
    if time_key is not None and mdata.obs[columns["time_key"]].nunique() < 2:
        logger.warning(
            "`mdata.obs[%r]` has a single time point: CrossmodalNet trains without a time discriminator.", time_key
        )
    return columns


def checked_protein_mask(prot, X_prot, layer: str, protein_key: str) -> np.ndarray:
    """The boolean mask layer ``layer`` of the protein modality (``True``: measured), checked against the matrix.

    Raises a :class:`KeyError` when the layer is missing and a :class:`ValueError` when it is not boolean or
    marks as measured a value that is NaN.
    """
    if layer not in prot.layers:
        raise KeyError(
            f"`protein_mask_layer={layer!r}`: mdata[{protein_key!r}] has no such layer; layers are "
            f"{list(prot.layers.keys())}. Add a boolean layer, True where a protein was measured."
        )
    mask = prot.layers[layer]
    mask = mask.toarray() if hasattr(mask, "toarray") else np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(
            f"`protein_mask_layer={layer!r}` must be boolean (True where a protein was measured), got dtype "
            f"{mask.dtype}; convert it first, e.g. `mdata[{protein_key!r}].layers[{layer!r}] = "
            f"mdata[{protein_key!r}].layers[{layer!r}].astype(bool)`."
        )
    if mask.shape != tuple(X_prot.shape):
        raise ValueError(f"`protein_mask_layer={layer!r}` has shape {mask.shape}, the proteins {tuple(X_prot.shape)}.")
    if isinstance(X_prot, np.ndarray) and X_prot.dtype.kind == "f":
        contradicting = mask & np.isnan(X_prot)
        if contradicting.any():
            bad = np.asarray(prot.var_names)[contradicting.any(axis=0)].tolist()
            raise ValueError(
                f"`protein_mask_layer={layer!r}` marks {int(contradicting.sum())} NaN value(s) as measured, in "
                f"protein(s) {bad[:10]}: the mask does not match the matrix. Set the mask to False there, or "
                "impute the values."
            )
    return mask


def check_proteins_measured(X_prot, names, protein_key: str, protein_layer: str | None) -> None:
    """Check a protein matrix in which NaN means "not measured" (panels joined with ``join="outer"``).

    NaN is accepted in a dense in-memory matrix only; infinite values, NaN in a sparse or backed matrix and a
    protein that no cell measured are refused with a :class:`ValueError` naming the proteins. Cells that
    measured no protein are warned about (they train the networks through nothing but the discriminators).
    """
    where = f"mdata[{protein_key!r}]"
    slot = f"layer {protein_layer!r}" if protein_layer else "`.X`"
    if not isinstance(X_prot, np.ndarray) or X_prot.dtype.kind != "f":
        check_finite(
            X_prot,
            where,
            protein_layer,
            names=names,
            hint=" NaN (not measured, e.g. panels joined with `anndata.concat(join='outer')`) is accepted in a "
            "dense in-memory protein matrix: densify it first, e.g. "
            f"`mdata[{protein_key!r}].X = mdata[{protein_key!r}].X.toarray()`.",
        )
        return
    infinite = np.isinf(X_prot)
    if infinite.any():
        bad = np.asarray(names)[infinite.any(axis=0)].tolist()
        raise ValueError(
            f"{where} {slot} has {int(infinite.sum())} infinite value(s) in column(s) {bad[:10]}; remove or "
            "impute them first (NaN, not infinity, marks a protein a cell did not measure)."
        )
    missing = np.isnan(X_prot)
    if not missing.any():
        return
    nowhere = missing.all(axis=0)
    if nowhere.any():
        bad = np.asarray(names)[nowhere].tolist()
        raise ValueError(
            f"{len(bad)} protein(s) of {where} {slot} are NaN (not measured) in every cell: {bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}. Nothing can be learnt for them; drop them first with "
            f"`cmn.pp.drop_proteins(mdata, {bad[:3]!r}, protein_key={protein_key!r})`."
        )
    n_empty = int(missing.all(axis=1).sum())
    if n_empty:
        warnings.warn(
            f"{n_empty} cell(s) of {where} measured no protein (all NaN); they add nothing to the prediction "
            "losses. Subset them away unless that is intended.",
            UserWarning,
            stacklevel=4,
        )


def _warn_constant_in_groups(
    mdata: MuData, prot, X_prot, columns: dict[str, str], constant: np.ndarray, *, protein_key: str
) -> None:
    """Warn, naming them, about proteins that are constant (e.g. all zero) in every cell of one batch or time point.

    A panel without the antibody gives such a protein (zeros or one fill value after joining panels); the
    model would learn the batch's missing measurement as biology. Proteins constant across all cells are
    warned about already and left out here; groups of a single cell are skipped.
    """
    for what, column in columns.items():
        labels = mdata.obs[column].reindex(prot.obs_names)
        found: dict[str, list[str]] = {}
        for label, positions in labels.groupby(labels, observed=True, sort=False).indices.items():
            if len(positions) < 2:
                continue
            in_group = zero_variance_columns(X_prot[np.sort(positions)]) & ~constant
            for name in prot.var_names[in_group]:
                found.setdefault(str(name), []).append(str(label))
        if found:
            listed = "; ".join(f"{name} in {groups}" for name, groups in list(found.items())[:10])
            warnings.warn(
                f"{len(found)} protein(s) of mdata[{protein_key!r}] are constant (e.g. all zero) in every cell of a "
                f"`{what}` group (`mdata.obs[{column!r}]`): {listed}{' ...' if len(found) > 10 else ''}. A panel "
                "that did not measure a protein looks like this after joining panels; the model would learn it as "
                "biology. Keep the proteins every panel measured (`cmn.pp.harmonize_proteins`, then "
                f"`cmn.pp.drop_proteins(mdata, names, protein_key={protein_key!r})`).",
                UserWarning,
                stacklevel=4,
            )


def check_query_genes(genes: pd.Index, model_genes: pd.Index, rna_key: str) -> None:
    """Raise unless a query's RNA has exactly the model's genes, in order.

    Parameters
    ----------
    genes
        Gene names of the query's RNA modality.
    model_genes
        The model's genes.
    rna_key
        Name of the query's RNA modality, for the message.
    """
    if not genes.equals(model_genes):
        missing = model_genes.difference(genes)
        raise ValueError(
            f"The genes of `mdata[{rna_key!r}]` differ from the model's {len(model_genes)} genes "
            f"({len(missing)} missing, or in another order). Align them first with "
            "`cmn.pp.harmonize_genes(mdata, model)`."
        )


def check_external_indexing(indices: Sequence[Sequence[int]], n_obs: int) -> list[np.ndarray]:
    """Validate a given train/validation/test split of ``n_obs`` registered cells.

    Parameters
    ----------
    indices
        Two or three sequences of integer positions: training, validation and (optionally) test cells.
    n_obs
        Number of registered cells.

    Returns
    -------
    Three int64 arrays, train, validation and test (empty when only two were given).
    """
    if isinstance(indices, str | bytes) or not hasattr(indices, "__len__") or len(indices) not in (2, 3):
        raise ValueError(
            "`datasplitter_kwargs['external_indexing']` must be a list of 2 or 3 arrays of cell positions: "
            "[train, validation] or [train, validation, test]."
        )
    parts = []
    for name, part in zip(("train", "validation", "test"), indices, strict=False):
        arr = np.asarray(part)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"`external_indexing` {name} positions must be integers (positions of registered cells), "
                f"got dtype {arr.dtype}."
            )
        arr = arr.astype(np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= n_obs):
            raise ValueError(
                f"`external_indexing` {name} positions must lie in [0, {n_obs}) (the registered cells); "
                f"got {arr.min()}..{arr.max()}."
            )
        if np.unique(arr).size != arr.size:
            raise ValueError(f"`external_indexing` {name} positions contain duplicates.")
        parts.append(arr)
    if len(parts) == 2:
        parts.append(np.array([], dtype=np.int64))
    if parts[0].size == 0:
        raise ValueError("`external_indexing` has no training cells; the first array must be non-empty.")
    for (a, name_a), (b, name_b) in (
        ((0, "train"), (1, "validation")),
        ((0, "train"), (2, "test")),
        ((1, "validation"), (2, "test")),
    ):
        shared = np.intersect1d(parts[a], parts[b])
        if shared.size:
            raise ValueError(
                f"`external_indexing` {name_a} and {name_b} cells overlap ({shared.size} cells, e.g. "
                f"{shared[:5].tolist()}); the sets must be disjoint."
            )
    return parts
