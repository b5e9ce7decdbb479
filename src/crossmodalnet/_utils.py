"""Modality lookup, input validation and argument helpers shared across the package (no torch import)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import numbers
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from anndata import AnnData
    from mudata import MuData


def is_nonnegative_number(value: object) -> bool:
    """Whether ``value`` is a finite real number >= 0 (``True`` and ``False`` are not numbers here).

    Parameters
    ----------
    value
        The value to check.

    Returns
    -------
    ``True`` for a finite ``int``, ``float`` or NumPy real scalar that is at least 0.
    """
    return (
        not isinstance(value, bool | np.bool_)
        and isinstance(value, numbers.Real)
        and bool(np.isfinite(value))
        and value >= 0
    )


def get_modality(mdata: MuData, key: str, caller: str, *, role: str = "") -> AnnData:
    """Return ``mdata[key]`` or raise a :class:`KeyError` that lists the modalities present."""
    if key not in mdata.mod:
        what = f"{role} modality" if role else "modality"
        raise KeyError(
            f"{caller}: no {what} {key!r} in the MuData; modalities are {list(mdata.mod)}. "
            f"Pass the right name (e.g. `{'protein_key' if role == 'protein' else 'rna_key'}=...`)."
        )
    return mdata.mod[key]


@contextlib.contextmanager
def shared_feature_names_quiet():
    """Keep out mudata's warnings about feature names shared between modalities, within this block only.

    In CITE-seq, antibodies are often named after their gene (CD4, CD14): mudata >= 0.4 then warns that
    ``mdata.var_names are not unique`` on every ``update()`` or read (mudata 0.3 warned ``Cannot join columns
    with the same name``). The package's own updates and reads of such a MuData are expected and harmless.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        warnings.filterwarnings("ignore", message="Cannot join columns with the same name", category=UserWarning)
        yield


def layer_names(adata: AnnData) -> list[str]:
    """Names of the layers of ``adata``: anndata >= 0.13 also lists ``None`` (``.X``) among the keys."""
    return [name for name in adata.layers.keys() if name is not None]


def get_layer(adata: AnnData, layer: str | None, mod_key: str = ""):
    """Return ``adata.layers[layer]`` (``adata.X`` for ``None``) or raise a :class:`KeyError`."""
    if layer is None:
        if adata.X is None:
            raise KeyError(f"Modality {mod_key!r} has no `.X`; pass the layer holding the data.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Modality {mod_key!r} has no layer {layer!r}; layers are {layer_names(adata)}.")
    return adata.layers[layer]


def is_in_memory(X) -> bool:
    """Whether ``X`` is a NumPy array or a SciPy sparse matrix (not backed on disk, not dask)."""
    return isinstance(X, np.ndarray) or sparse.issparse(X)


def _as_block(block):
    """A block of rows read from any matrix, in memory: sparse stays sparse, the rest becomes an ndarray."""
    if is_dask_array(block):
        block = block.compute()
    return block if sparse.issparse(block) else np.asarray(block)


def iter_row_blocks(X, *, chunk: int = 4096) -> Iterator:
    """Consecutive blocks of ``chunk`` rows of ``X`` (dense, sparse, backed or dask), each read into memory."""
    for start in range(0, X.shape[0], chunk):
        yield _as_block(X[start : start + chunk])


def sorting_permutation(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, inverse)``: ``rows[order]`` is sorted (stable) and ``rows[order][inverse]`` is ``rows`` again."""
    order = np.argsort(rows, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return order, inverse


def read_rows(X, rows: np.ndarray, *, chunk: int = 4096):
    """Rows ``rows`` (distinct positions, any order) of ``X`` in memory, in the order given.

    A backed (HDF5) or dask matrix is read in increasing positions, ``chunk`` rows at a time, as HDF5
    requires; sparse rows stay sparse (CSR), the rest is an ndarray.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if is_in_memory(X):
        return X[rows]
    order, inverse = sorting_permutation(rows)
    blocks = [_as_block(X[rows[order[start : start + chunk]]]) for start in range(0, rows.size, chunk)]
    if not blocks:
        return _as_block(X[:0])
    block = sparse.vstack(blocks, format="csr") if sparse.issparse(blocks[0]) else np.concatenate(blocks)
    return block if np.all(order[1:] > order[:-1]) else block[inverse]


def _stored_values(block) -> np.ndarray:
    return block.data if sparse.issparse(block) else np.asarray(block)


def check_finite(X, where: str, layer: str | None = None, *, names=None, hint: str = "") -> None:
    """Raise a :class:`ValueError` if a matrix holds NaN or infinite values.

    A backed (on-disk) or dask matrix is read by row blocks, one at a time. With ``names`` (the column names),
    the message names the columns that hold them; ``hint`` is appended.
    """
    if getattr(X, "dtype", None) is None or not np.issubdtype(X.dtype, np.number):
        return
    blocks = [X] if is_in_memory(X) else iter_row_blocks(X)
    n = 0
    bad_columns: set[int] = set()
    for block in blocks:
        values = _stored_values(block)
        finite = np.isfinite(values)
        n += int(values.size - finite.sum())
        if names is not None and not finite.all():
            if sparse.issparse(block):
                coo = sparse.coo_matrix(block)
                bad_columns.update(np.unique(coo.col[~np.isfinite(coo.data)]).tolist())
            else:
                bad_columns.update(np.flatnonzero(~finite.all(axis=0)).tolist())
    if n:
        slot = f"layer {layer!r}" if layer else "`.X`"
        columns = ""
        if names is not None:
            bad = sorted(bad_columns)
            listed = [str(names[i]) for i in bad[:10]]
            columns = f" in {len(bad)} column(s) {listed}{' ...' if len(bad) > 10 else ''}"
        raise ValueError(
            f"{where} {slot} has {n} NaN or infinite value(s){columns}; remove or impute them first.{hint}"
        )


def check_unique_names(names, what: str, mod_key: str) -> None:
    """Raise a :class:`ValueError` naming duplicated feature names."""
    idx = pd.Index(names)
    if not idx.is_unique:
        dups = idx[idx.duplicated()].unique().tolist()
        raise ValueError(
            f"{len(dups)} duplicated {what} name(s) in modality {mod_key!r}, e.g. {dups[:5]}; "
            f"make them unique first (`mdata[{mod_key!r}].var_names_make_unique()`)."
        )


def check_aligned_cells(mdata: MuData, mod_keys: list[str]) -> None:
    """Require the modalities to hold the same cells in the same order as ``mdata.obs_names``.

    scvi-tools reads modality matrices by row position, so cells in another order would be
    silently paired with the wrong rows.
    """
    for key in mod_keys:
        mod_names = mdata.mod[key].obs_names
        if mod_names.equals(mdata.obs_names):
            continue
        missing = mdata.obs_names.difference(mod_names)
        if len(missing) or len(mod_names) != mdata.n_obs:
            raise ValueError(
                f"Modality {key!r} holds {len(mod_names)} cells but the MuData has {mdata.n_obs} "
                f"({len(missing)} cells have no {key!r} data, e.g. {missing[:3].tolist()}). Keep the cells "
                "measured in every modality first, e.g. `muon.pp.intersect_obs(mdata)`."
            )
        raise ValueError(
            f"Modality {key!r} lists the cells in another order than `mdata.obs_names`. Reorder it first: "
            f"`mdata.mod[{key!r}] = mdata[{key!r}][mdata.obs_names].copy(); mdata.update()`."
        )


def stale_modality(mdata: MuData) -> tuple[str, int, int] | None:
    """The first modality with another number of features than ``mdata`` maps to it, with both counts.

    Assigning ``mdata.mod[key] = ...`` does not update the MuData: its ``var`` and ``varmap`` still
    describe the old modality until ``mdata.update()``, and any subsetting of ``mdata`` then reads
    positions that no longer exist. Renamed features (same count) subset correctly and pass. ``None``
    when every modality matches.
    """
    for key, mod in mdata.mod.items():
        mapping = np.asarray(mdata.varmap[key]).ravel() if key in mdata.varmap else np.zeros(0, dtype=np.int64)
        present = np.flatnonzero(mapping)
        n_mapped = int(present.size)
        if n_mapped != mod.n_vars or (n_mapped and int(mapping.max()) > mod.n_vars):
            return key, mod.n_vars, n_mapped
    return None


def check_current(mdata: MuData, caller: str) -> None:
    """Raise a :class:`ValueError` if a modality of ``mdata`` was replaced or subset without ``mdata.update()``."""
    stale = stale_modality(mdata)
    if stale is None:
        return
    key, n_mod, n_mapped = stale
    raise ValueError(
        f"{caller}: the MuData is out of date with its modality {key!r}: `mdata.mod[{key!r}]` has {n_mod} features "
        f"but `mdata.var` maps {n_mapped} to it, so it was replaced or subset without `mdata.update()`. Run "
        f"`mdata.update()` first; to remove proteins, `cmn.pp.drop_proteins(mdata, names)` updates the MuData."
    )


def zero_variance_columns(X) -> np.ndarray:
    """Boolean mask of constant columns of a dense, sparse or backed matrix (a backed one is read by row blocks)."""
    if sparse.issparse(X):
        X = sparse.csc_matrix(X)
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        return (sq - mean**2) <= 1e-12 * np.maximum(1.0, sq)
    if isinstance(X, np.ndarray):
        if X.dtype.kind != "f" or not np.isnan(X).any():
            return np.ptp(X, axis=0) == 0
        # NaN means "not measured": constant over the measured values; a column measured nowhere is not constant
        measured = ~np.isnan(X)
        high = np.where(measured, X, -np.inf).max(axis=0)
        low = np.where(measured, X, np.inf).min(axis=0)
        return measured.any(axis=0) & (high == low)
    low = np.full(X.shape[1], np.inf)
    high = np.full(X.shape[1], -np.inf)
    for block in iter_row_blocks(X):
        if block.shape[0] == 0:
            continue
        # scipy's min/max count the implicit zeros of a sparse block
        low = np.minimum(
            low, np.asarray(block.min(axis=0).toarray() if sparse.issparse(block) else block.min(axis=0)).ravel()
        )
        high = np.maximum(
            high, np.asarray(block.max(axis=0).toarray() if sparse.issparse(block) else block.max(axis=0)).ravel()
        )
    return high - low == 0


def _sample_values(X, n_check: int) -> np.ndarray:
    """The first ``n_check`` stored values of ``X`` in row order; a backed matrix is read only as far as needed."""
    if is_in_memory(X):
        values = X.data if sparse.issparse(X) else np.asarray(X).ravel()
        return values[:n_check]
    parts, n = [], 0
    for block in iter_row_blocks(X, chunk=1024):
        values = _stored_values(block).ravel()
        parts.append(values[: n_check - n])
        n += parts[-1].size
        if n >= n_check:
            break
    return np.concatenate(parts) if parts else np.zeros(0)


def is_nonnegative_integer(X, *, n_check: int = 100_000) -> bool:
    """Whether the (first ``n_check`` stored) values are non-negative integers; an empty matrix qualifies."""
    values = _sample_values(X, n_check)
    if values.dtype.kind == "f":
        values = values[~np.isnan(values)]  # not measured
    return bool(values.size == 0 or (np.all(values >= 0) and np.allclose(values, np.round(values))))


def looks_like_counts(X, *, n_check: int = 100_000) -> bool:
    """Heuristic: non-negative integer values with some value above 20 (log-normalised data rarely exceeds ~10)."""
    values = _sample_values(X, n_check)
    if values.dtype.kind == "f":
        values = values[~np.isnan(values)]  # not measured
    return bool(values.size > 0 and is_nonnegative_integer(values) and values.max() > 20)


_LOG1P_TOTAL = "log1p_normalize_total"


def is_dask_array(X) -> bool:
    """Whether ``X`` is a :class:`dask.array.Array` (without importing dask when it is not loaded)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def _head_rows(X, n: int):
    """The first ``n`` rows of a dense, sparse, backed (on-disk) or dask matrix, in memory."""
    block = X[: min(n, X.shape[0])]
    if is_dask_array(block):
        block = block.compute()
    return block if sparse.issparse(block) else np.asarray(block)


def rna_normalization_record(X, uns: dict | None = None, *, n_check: int = 500) -> dict:
    """How a registered RNA matrix was normalised, for checking query data later.

    ``{'method': 'log1p_normalize_total', 'target_sum': t}`` from the record of
    :func:`crossmodalnet.pp.log_normalize` in ``uns``, or inferred when ``expm1`` of the first
    ``n_check`` cells sums to the same total in each cell (scanpy's ``normalize_total`` + ``log1p``);
    ``{'method': 'counts'}`` for raw counts; ``{'method': 'unknown'}`` otherwise.
    """
    record = (uns or {}).get("cmn_preprocessing")
    if isinstance(record, dict) and record.get("method") == _LOG1P_TOTAL and "target_sum" in record:
        return {"method": _LOG1P_TOTAL, "target_sum": float(record["target_sum"])}
    block = _head_rows(X, n_check)
    if looks_like_counts(block):
        return {"method": "counts"}
    block = block.toarray() if sparse.issparse(block) else np.asarray(block, dtype=np.float64)
    if block.size and np.all(block >= 0):
        totals = np.expm1(block.astype(np.float64)).sum(axis=1)
        totals = totals[totals > 0]
        if totals.size and np.ptp(totals) <= 1e-3 * np.median(totals):
            return {"method": _LOG1P_TOTAL, "target_sum": float(np.median(totals)), "inferred": True}
    return {"method": "unknown"}


def protein_normalization_record(X, uns: dict | None = None, *, layer: str | None = None, n_check: int = 500) -> dict:
    """How a registered protein matrix was transformed, for scoring raw observed proteins later.

    ``{'method': 'clr', 'axis': a, 'protein_names': [...]}`` (``axis=0`` also ``log_mean``) from the
    record of :func:`crossmodalnet.pp.clr` in ``uns`` when ``.X`` was registered (``layer`` is ``None``);
    ``{'method': 'counts'}`` for raw counts; ``{'method': 'dsb'}`` or ``{'method': 'unknown'}`` otherwise (the
    transform cannot be repeated on other cells: DSB needs their empty droplets).
    """
    if looks_like_counts(_head_rows(X, n_check)):
        return {"method": "counts"}
    record = (uns or {}).get("cmn_preprocessing") if layer is None else None
    if not isinstance(record, dict):
        return {"method": "unknown"}
    method = str(record.get("method"))
    if method == "clr" and "protein_names" in record and int(record.get("axis", 1)) in (0, 1):
        out = {
            "method": "clr",
            "axis": int(record.get("axis", 1)),
            "protein_names": np.asarray(record["protein_names"], dtype=str),
        }
        if out["axis"] == 0:
            if "log_mean" not in record:
                return {"method": "unknown"}
            out["log_mean"] = np.asarray(record["log_mean"], dtype=np.float64)
        return out
    return {"method": method if method == "dsb" else "unknown"}


def apply_protein_normalization(counts: pd.DataFrame, record: dict) -> pd.DataFrame | None:
    """Transform raw ADT counts (cells × proteins, named columns) as ``record`` says, or ``None`` if it cannot.

    CLR is recomputed over the proteins it was computed over at training (a superset of the model's
    proteins when isotypes were removed after CLR), so every one of them must be among ``counts``' columns.
    """
    if record.get("method") != "clr":
        return None
    names = pd.Index(np.asarray(record["protein_names"], dtype=str))
    if not names.isin(counts.columns).all():
        return None
    x = counts[names].to_numpy(dtype=np.float64)
    if record["axis"] == 1:
        out = np.log1p(x / np.exp(np.log1p(x).mean(axis=1, keepdims=True)))
    else:
        log_mean = np.asarray(record["log_mean"], dtype=np.float64)
        if log_mean.shape != (names.size,):
            return None
        out = np.log1p(x / np.exp(log_mean))
    return pd.DataFrame(out, index=counts.index, columns=names)


# the query matrices already announced as raw counts in the current public call (None outside one)
_ANNOUNCED_QUERIES: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "crossmodalnet_announced_queries", default=None
)


@contextlib.contextmanager
def announce_once() -> Iterator[None]:
    """Within this block, :func:`query_normalization` logs its raw-count line once per query matrix.

    A public call that reads its query many times (e.g. the MC-dropout passes of a prediction with
    uncertainty) opens this block, so the user sees one line per call. Nested blocks share the
    outermost one.
    """
    if _ANNOUNCED_QUERIES.get() is not None:
        yield
        return
    token = _ANNOUNCED_QUERIES.set(set())
    try:
        yield
    finally:
        _ANNOUNCED_QUERIES.reset(token)


def query_normalization(X, record: dict | None, where: str, caller: str) -> float | None:
    """Check query RNA against the model's normalisation record: the one check of every query path.

    Returns ``None`` when ``X`` can be used as it is, or the ``target_sum`` to apply when ``X`` holds raw
    counts and the model's RNA was log1p library-size normalised (logged, once per ``where`` inside
    :func:`announce_once`). Raises a :class:`ValueError` when ``X`` holds raw counts and the model's
    normalisation is not known.
    """
    method = (record or {}).get("method")
    if method == "counts" or not looks_like_counts(_head_rows(X, 2000)):
        return None
    if method == _LOG1P_TOTAL:
        target_sum = float(record["target_sum"])
        announced = _ANNOUNCED_QUERIES.get()
        if announced is None or where not in announced:
            logging.getLogger("crossmodalnet").info(
                "%s: %s looks like raw counts; normalising it as the model's RNA was "
                "(log1p of counts per %g, as `cmn.pp.log_normalize`)",
                caller,
                where,
                target_sum,
            )
        if announced is not None:
            announced.add(where)
        return target_sum
    raise ValueError(
        f"{caller}: {where} looks like raw counts, but the model was trained on RNA normalised in a way it did not "
        "record. Normalise the query as the training RNA was (e.g. `cmn.pp.log_normalize(mdata)`), or pass the "
        "layer that holds the normalised values."
    )


def log_normalize_rows(X, target_sum: float):
    """``log1p(x / total × target_sum)`` of each row of a dense or sparse count matrix (a new matrix)."""
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
        totals = np.asarray(X.sum(axis=1)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
        X = sparse.diags(scale.astype(np.float32)) @ X
        X.data = np.log1p(X.data)
        return X
    X = np.asarray(X, dtype=np.float32)
    totals = X.sum(axis=1, keepdims=True, dtype=np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(X * scale.astype(np.float32))


class NormalizedRows:
    """Rows of a count matrix, log1p library-size normalised when read (dense, sparse or backed)."""

    def __init__(self, X, target_sum: float):
        self.X = X
        self.target_sum = target_sum
        self.shape = X.shape

    def __getitem__(self, rows):
        return log_normalize_rows(self.X[rows], self.target_sum)


# A panel prefix ("ADT_") and a TotalSeq barcode suffix ("_A0090") around a bare isotype name.
_PANEL_PREFIX = r"(?:adt|ab|prot|cite)[ _.-]"
_ISOTYPE_NAME = (
    rf"isotype|^(?:{_PANEL_PREFIX})?(?:mouse|rat|hamster|armenian[ _.-]?hamster)[ _.-]?ig"
    r"|ig[gm]\d*[a-z]*[ _.-]?(?:ctrl|control)"
    # a bare IgG subclass (IgG1, IgG2a, IgG2b_kappa): a control; IgG with no subclass, IgA, IgD and IgM are markers
    rf"|^(?:{_PANEL_PREFIX})?igg\d[a-c]?(?:[ _.-]?(?:kappa|k|lambda|l))?(?:[ _.-]?(?:[abc]\d{{4}}|totalseq[ _.-]?[abc]?))?$"
)
_HASHTAG_NAME = r"(?<![a-z])(?:hto|hashtag)"
_HASHTAG_TYPE = r"hto|hashtag|multiplex"


def detect_control_features(var) -> tuple[list[str], list[str]]:
    """Isotype controls and cell hashtags among protein features, by name and ``var`` annotations.

    Isotypes: names containing "isotype", starting with a host species and "Ig" ("MouseIgG1kappa...",
    "Rat IgG2b"), an IgG/IgM followed by "control"/"ctrl" ("IgG2a_control_TotalSeqB"), or a bare IgG
    subclass ("IgG1", "IgG2a", "ADT_IgG2b_A0092"), or a boolean ``var['isotype']``; IgA/IgD/IgM markers and
    IgG without a subclass (an anti-IgG antibody) are not matched. Hashtags: names with "HTO" or "hashtag", or a
    ``var['feature_types']`` value naming them (10x ``feature_types`` often says "Antibody Capture" or
    "ADT" for both, hence the names).
    """
    names = pd.Index(var.index.astype(str))
    isotype = names.str.contains(_ISOTYPE_NAME, case=False, regex=True)
    if "isotype" in var and pd.api.types.is_bool_dtype(var["isotype"]):
        isotype |= var["isotype"].to_numpy(dtype=bool)
    hashtag = names.str.contains(_HASHTAG_NAME, case=False, regex=True)
    if "feature_types" in var:
        hashtag |= var["feature_types"].astype(str).str.contains(_HASHTAG_TYPE, case=False, regex=True).to_numpy()
    return names[isotype & ~hashtag].tolist(), names[hashtag].tolist()


def resolve_obs_column(mdata: MuData, key: str) -> str | None:
    """The column of ``mdata.obs`` that holds ``key``: ``key`` itself or a modality's copy of it.

    A MuData built from AnnData objects prefixes their ``obs`` columns with the modality name
    (``"rna:hash_id"``) unless the column is shared; a key given with a prefix also matches the bare
    column. ``None`` if no column, or more than one modality's, matches.
    """
    columns = mdata.obs.columns
    if key in columns:
        return key
    base = key.split(":", 1)[1] if ":" in key and key.split(":", 1)[0] in mdata.mod else key
    if base in columns:
        return base
    hits = [f"{mod}:{base}" for mod in mdata.mod if f"{mod}:{base}" in columns]
    return hits[0] if len(hits) == 1 else None


def missing_obs_column_message(mdata: MuData, key: str, what: str) -> str:
    """Message for an ``obs`` column that :func:`resolve_obs_column` did not find, or found in several modalities."""
    base = key.split(":", 1)[1] if ":" in key and key.split(":", 1)[0] in mdata.mod else key
    prefixed = [f"{mod}:{base}" for mod in mdata.mod if f"{mod}:{base}" in mdata.obs.columns]
    in_mods = [mod for mod, a in mdata.mod.items() if base in a.obs.columns]
    if len(prefixed) > 1 or (not prefixed and len(in_mods) > 1):
        where = (
            ", ".join(f"`mdata.obs[{c!r}]`" for c in prefixed)
            if len(prefixed) > 1
            else ", ".join(f"`mdata[{m!r}].obs`" for m in in_mods)
        )
        first = prefixed[0] if len(prefixed) > 1 else f"{in_mods[0]}:{base}"
        source = f"mdata.obs[{first!r}]" if len(prefixed) > 1 else f"mdata[{in_mods[0]!r}].obs[{base!r}]"
        choose = (
            f"pass `{what}={first!r}` to use that modality's, or "
            if len(prefixed) > 1
            else f"pull one with `mdata.pull_obs([{base!r}], mods=[{in_mods[0]!r}])` and pass `{what}={first!r}`, or "
        )
        return (
            f"`{what}={key!r}` is ambiguous: the column exists in several modalities ({where}). Choose one: "
            f"{choose}copy it into `mdata.obs` with `mdata.obs[{base!r}] = {source}` (check first that the "
            "modalities agree)."
        )
    if in_mods:
        return (
            f"`{what}={key!r}` is a column of `mdata[{in_mods[0]!r}].obs` but not of `mdata.obs` (a MuData does not "
            f"copy its modalities' columns); pull it over with "
            f"`mdata.pull_obs([{key!r}], mods=[{in_mods[0]!r}])` (it becomes `{in_mods[0]}:{key}`, which is accepted)."
        )
    return f"`{what}={key!r}` is not a column of `mdata.obs`; columns are {list(mdata.obs.columns)}."


def obs_mask(
    mdata: MuData,
    mask: str | Sequence[bool] | np.ndarray | pd.Series | None,
    name: str,
    caller: str,
    *,
    obs_names: pd.Index | None = None,
) -> np.ndarray | None:
    """Boolean mask over ``obs_names`` (default ``mdata.obs_names``) from a column name or an array.

    A column or :class:`pandas.Series` is aligned by cell name; a plain array must already be aligned
    with ``mdata.obs_names``. Returns ``None`` for ``None``.
    """
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask not in mdata.obs:
            raise KeyError(
                f"{caller}: `{name}={mask!r}` is not a column of `mdata.obs`; columns are {list(mdata.obs.columns)}."
            )
        series = mdata.obs[mask]
    elif isinstance(mask, pd.Series):
        series = mask
    else:
        values = np.asarray(mask)
        if values.shape != (mdata.n_obs,):
            raise ValueError(
                f"{caller}: `{name}` has shape {values.shape}; expected one value per cell of `mdata` ({mdata.n_obs},)."
            )
        series = pd.Series(values, index=mdata.obs_names)
    if series.isna().any() or not pd.api.types.is_bool_dtype(series.dtype):
        raise ValueError(f"{caller}: `{name}` must be boolean without missing values, got dtype {series.dtype}.")
    target = mdata.obs_names if obs_names is None else obs_names
    if not series.index.is_unique:
        raise ValueError(f"{caller}: `{name}` has duplicated cell names.")
    aligned = series.reindex(target)
    if aligned.isna().any():
        raise ValueError(f"{caller}: `{name}` does not cover {int(aligned.isna().sum())} cell(s) of the data.")
    out = aligned.to_numpy(dtype=bool)
    if not out.any():
        raise ValueError(f"{caller}: `{name}` selects no cell.")
    return out


def resolve_seed(rng: int | np.random.Generator | None) -> int | None:
    """Integer seed for libraries that take one (gseapy, scikit-learn); ``None`` stays ``None``."""
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise ValueError(f"`rng` must be a non-negative int, a numpy.random.Generator or None, got {rng!r}.")
    return int(rng)


def seed_of(rng: int | np.random.Generator | None) -> int:
    """An integer seed from ``rng``: the integer itself, a draw from a generator, or a fresh one for ``None``."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**62))
    if rng is None:
        return int(np.random.default_rng().integers(2**62))
    return int(rng)


def check_level(level: float) -> float:
    """Return ``level`` as a float, or raise a :class:`ValueError` unless it lies strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must be a number strictly between 0 and 1 (e.g. 0.9), got {level!r}.")
    return float(level)


def select_names(value: str | Sequence[str] | None, available: Sequence[str], what: str, caller: str) -> list[str]:
    """Requested names (all of ``available`` if ``None``), or a :class:`KeyError` naming the unknown ones."""
    avail = [str(a) for a in available]
    names = avail if value is None else ([value] if isinstance(value, str) else [str(v) for v in value])
    unknown = [n for n in names if n not in set(avail)]
    if unknown:
        raise KeyError(
            f"{caller}: unknown {what} {unknown[:5]}; available: {avail[:10]}{' ...' if len(avail) > 10 else ''}."
        )
    if not names:
        raise ValueError(f"{caller}: no {what} selected.")
    return names
