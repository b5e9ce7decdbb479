"""Writing predictions straight to an on-disk AnnData (``.zarr`` or ``.h5ad``), block by block.

The file is laid out by anndata itself: :meth:`anndata.AnnData.write_zarr`/``write_h5ad`` writes the
skeleton (``obs``, ``var``, ``uns``) and :func:`anndata.io.write_elem` creates ``X`` as an anndata dense
array with no rows, which is then resized and filled one block of cells at a time. Everything goes to
a temporary path beside the target, renamed onto it only once complete, so an error leaves nothing at
the target.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Iterator, Sequence

    import dask.array as da

logger = logging.getLogger(__name__)

STORE_SUFFIXES = (".zarr", ".h5ad")


def check_store_path(out: str | os.PathLike, *, overwrite: bool, caller: str) -> Path:
    """``out`` as a :class:`~pathlib.Path`, after checking its extension and that it may be written."""
    path = Path(out)
    if path.suffix not in STORE_SUFFIXES:
        raise ValueError(
            f"{caller}: `out={str(out)!r}` must end in '.zarr' or '.h5ad' (an AnnData of cells × proteins); "
            f"got {path.suffix or 'no extension'!r}."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{caller}: {path} already exists; pass `overwrite=True` to replace it.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{caller}: the folder {path.parent} of `out` does not exist; create it first.")
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it on success and removed on any error."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        if path.exists() or path.is_symlink():
            # a directory (zarr) cannot be renamed onto a non-empty one: move the old aside first
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            path.rename(old)
            tmp.rename(path)
            _remove(old)
        else:
            tmp.rename(path)
    except BaseException:
        _remove(tmp)
        raise


def _skeleton(obs_names: pd.Index, var_names: pd.Index, uns: dict):
    import anndata as ad

    # Index.astype(str) keeps a string index as it is: no fixed-width copy of millions of cell names
    return ad.AnnData(
        obs=pd.DataFrame(index=pd.Index(obs_names).astype(str).rename(None)),
        var=pd.DataFrame(index=pd.Index(var_names).astype(str).rename(None)),
        uns=uns,
    )


@contextlib.contextmanager
def _open_x(tmp: Path, n_obs: int, n_vars: int, chunk_rows: int, *, names: bool = False, layers: Sequence[str] = ()):
    """Create the empty ``X`` (anndata encoding, float32, chunked by rows) of the skeleton at ``tmp``; yield it.

    With ``names``, the skeleton's (empty) ``obs`` index is replaced by a resizable string array of ``n_obs``
    rows too, ``layers`` get arrays shaped like ``X``, and ``(X, index, {layer: array})`` is yielded: the
    caller fills them block by block.
    """
    from anndata.io import write_elem

    empty = np.zeros((0, n_vars), dtype=np.float32)
    chunks = (max(1, min(chunk_rows, n_obs)), max(n_vars, 1))
    if tmp.suffix == ".h5ad":
        import h5py

        with h5py.File(tmp, "r+") as f:
            for parent, key in ((f, "X"), *((f["layers"], name) for name in (layers if names else ()))):
                write_elem(parent, key, empty, dataset_kwargs={"maxshape": (None, n_vars), "chunks": chunks})
                parent[key].resize((n_obs, n_vars))
            if not names:
                yield f["X"]
                return
            del f["obs/_index"]
            kwargs = {"maxshape": (None,), "chunks": chunks[:1]}
            write_elem(f["obs"], "_index", np.array([], dtype=object), dataset_kwargs=kwargs)
            f["obs/_index"].resize((n_obs,))
            yield f["X"], f["obs/_index"], {name: f[f"layers/{name}"] for name in layers}
        return
    import zarr

    group = zarr.open_group(tmp, mode="r+", use_consolidated=False)
    for parent, key in ((group, "X"), *((group["layers"], name) for name in (layers if names else ()))):
        write_elem(parent, key, empty, dataset_kwargs={"chunks": chunks})
        parent[key].resize((n_obs, n_vars))
    if names:
        del group["obs/_index"]
        write_elem(group["obs"], "_index", np.array([], dtype=object), dataset_kwargs={"chunks": chunks[:1]})
        group["obs/_index"].resize((n_obs,))
        yield group["X"], group["obs/_index"], {name: group[f"layers/{name}"] for name in layers}
    else:
        yield group["X"]
    with warnings.catch_warnings():  # zarr 3 warns that consolidated metadata is not in its format's spec
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp))


def write_blocks(
    path: Path,
    blocks: Iterable[tuple[int, np.ndarray]],
    *,
    obs_names: pd.Index,
    var_names: pd.Index,
    uns: dict,
    chunk_rows: int,
) -> int:
    """Write an AnnData (``X`` = the blocks, cells × ``var_names``) to ``path``; return the rows written.

    ``blocks`` yields ``(first row, rows × vars array)`` covering every row once, in any order.
    """
    n_obs, n_vars = len(obs_names), len(var_names)
    written = 0
    with _staged(path) as tmp:
        _write_skeleton(tmp, _skeleton(obs_names, var_names, uns))
        with _open_x(tmp, n_obs, n_vars, chunk_rows) as X:
            for start, block in blocks:
                X[start : start + block.shape[0]] = np.asarray(block, dtype=np.float32)
                written += block.shape[0]
        if written != n_obs:
            raise RuntimeError(f"wrote {written} of {n_obs} rows to {path}; the store was not kept")
    return written


def write_named_blocks(
    path: Path,
    blocks: Iterable[tuple[int, np.ndarray, pd.Index, dict[str, np.ndarray]]],
    *,
    n_obs: int,
    var_names: pd.Index,
    uns: dict,
    chunk_rows: int,
    layers: Sequence[str] = (),
) -> int:
    """:func:`write_blocks` whose cell names come with the blocks: ``(first row, rows × vars array, names, layers)``.

    No index of all ``n_obs`` cell names is ever built: each block's names are written into ``obs``'s
    index (an anndata string array, resized to ``n_obs`` rows) beside its rows of ``X``, and its arrays of
    ``layers`` (a dict with every name of ``layers``; empty without them) beside them in ``layers``.
    """
    written = 0
    with _staged(path) as tmp:
        _write_skeleton(tmp, _skeleton(pd.Index([], dtype=str), var_names, uns))
        with _open_x(tmp, n_obs, len(var_names), chunk_rows, names=True, layers=layers) as (X, index, targets):
            for start, block, names, extra in blocks:
                rows = slice(start, start + block.shape[0])
                if len(names) != block.shape[0]:
                    raise RuntimeError(f"a block of {block.shape[0]} rows came with {len(names)} cell names")
                if set(extra) != set(targets):
                    raise RuntimeError(f"a block came with layers {sorted(extra)}, not {sorted(targets)}")
                X[rows] = np.asarray(block, dtype=np.float32)
                for name, values in extra.items():
                    targets[name][rows] = np.asarray(values, dtype=np.float32)
                index[rows] = np.asarray(names, dtype=object)
                written += block.shape[0]
        if written != n_obs:
            raise RuntimeError(f"wrote {written} of {n_obs} rows to {path}; the store was not kept")
    return written


def _write_skeleton(tmp: Path, adata) -> None:
    if tmp.suffix == ".h5ad":
        adata.write_h5ad(tmp)
    else:
        adata.write_zarr(tmp)


def write_dask(
    path: Path,
    X: da.Array,
    *,
    obs_names: pd.Index,
    var_names: pd.Index,
    uns: dict,
) -> None:
    """Write an AnnData whose ``X`` is the dask array ``X`` to ``path``, computed where the scheduler runs.

    ``.zarr``: :func:`dask.array.store` into the zarr array, each task writing its own row blocks (on a
    multi-machine cluster ``path`` must be on a filesystem every worker sees). ``.h5ad``: HDF5 files
    are not written from several processes, so the blocks are computed on the workers and written here,
    a few at a time.
    """
    import dask.array as da

    X = X.astype(np.float32)
    chunk_rows = int(X.chunks[0][0]) if X.chunks[0] else 1
    if path.suffix == ".h5ad":
        write_blocks(
            path,
            _computed_blocks(X),
            obs_names=obs_names,
            var_names=var_names,
            uns=uns,
            chunk_rows=chunk_rows,
        )
        return
    with _staged(path) as tmp:
        _write_skeleton(tmp, _skeleton(obs_names, var_names, uns))
        with _open_x(tmp, X.shape[0], X.shape[1], chunk_rows) as target:
            # each dask block must cover whole zarr chunks, so that no two tasks write into the same chunk
            if any(c != chunk_rows for c in X.chunks[0][:-1]) or X.chunks[0][-1] > chunk_rows:
                X = X.rechunk({0: chunk_rows})
            da.store(X, target, lock=False, compute=True)


def _computed_blocks(X: da.Array, in_flight: int = 4) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, block)`` of each row block of ``X``, computed ``in_flight`` at a time (in order)."""
    import dask

    offsets = np.r_[0, np.cumsum(X.chunks[0])].astype(np.int64)
    blocks = X.to_delayed().ravel()
    for i in range(0, len(blocks), in_flight):
        done = dask.compute(*blocks[i : i + in_flight])
        for j, block in enumerate(done):
            yield int(offsets[i + j]), block
