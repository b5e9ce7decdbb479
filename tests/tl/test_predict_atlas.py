"""``cmn.tl.predict_atlas``: an RNA-only ``.h5ad``/``.zarr`` on disk predicted into an on-disk AnnData, file to file.

Each block of cells takes the in-memory path, so the file must hold exactly what
``cmn.tl.predict_protein`` writes into ``.obsm`` for the whole atlas in memory: with other genes, raw
counts, time and batch read from the atlas's ``obs``, blocks that do not divide the cells. Bad input fails
before anything is written.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import crossmodalnet as cmn

CHUNK, BATCH = 40, 17  # neither divides the 150 cells


@pytest.fixture(scope="module")
def model(covariate_model):
    return covariate_model


def _atlas(model, *, layout: str = "csr", counts: bool = False, genes=None) -> ad.AnnData:
    """RNA-only AnnData of the model's cells (shuffled), with time and batch in ``obs``."""
    order = np.random.default_rng(2).permutation(model.adata.n_obs)
    rna = model.adata["rna"][order].copy()
    for col in ("time", "batch"):
        rna.obs[col] = model.adata.obs[col].reindex(rna.obs_names).to_numpy()
    rna.obs_names = [f"AAAC{i:05d}-1" for i in range(rna.n_obs)]
    if counts:  # integer counts above 20 are recognised as raw counts
        rna.X = 3 * rna.layers["counts"]
    rna.layers.clear(keep_x=True)
    if genes is not None:
        rna = rna[:, genes].copy()
    dense = np.asarray(rna.X.toarray() if sparse.issparse(rna.X) else rna.X, dtype=np.float32)
    rna.X = sparse.csr_matrix(dense) if layout == "csr" else dense
    return rna


def _write(adata: ad.AnnData, path):
    if path.suffix == ".zarr":
        adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


def _read(path):
    return ad.read_zarr(path) if path.suffix == ".zarr" else ad.read_h5ad(path)


def _in_memory(model, adata: ad.AnnData, **kwargs) -> pd.DataFrame:
    mdata = cmn.pp.to_mudata(adata.copy())
    cmn.tl.predict_protein(mdata, model, batch_size=BATCH, **kwargs)
    return mdata.obsm["cmn_protein"]


@pytest.mark.parametrize("source", [".h5ad", ".zarr"])
@pytest.mark.parametrize("out", [".zarr", ".h5ad"])
@pytest.mark.parametrize(("layout", "counts", "other_genes"), [("csr", False, False), ("dense", True, True)])
def test_atlas_file_equals_in_memory(model, tmp_path, source, out, layout, counts, other_genes):
    genes = list(model.adata["rna"].var_names[::-1][:25]) + ["not_a_model_gene"] if other_genes else None
    if genes is not None:
        genes = genes[:-1]
    adata = _atlas(model, layout=layout, counts=counts, genes=genes)
    want = _in_memory(model, adata)
    path = _write(adata, tmp_path / f"atlas{source}")

    target = tmp_path / f"pred{out}"
    cmn.tl.predict_atlas(path, model, out=target, batch_size=BATCH, chunk_size=CHUNK)
    got = _read(target)
    assert got.shape == (adata.n_obs, model.n_proteins)
    assert got.X.dtype == np.float32
    assert list(got.obs_names) == list(adata.obs_names)
    assert list(got.var_names) == [str(p) for p in model.protein_names]
    np.testing.assert_array_equal(got.X, want.to_numpy(dtype=np.float32))
    meta = got.uns["cmn_protein"]
    assert meta["params"]["chunk_size"] == CHUNK
    assert meta["params"]["path"] == str(path)
    assert list(meta["protein_names"]) == list(got.var_names)
    assert meta["coverage"] == pytest.approx(25 / 30 if other_genes else 1.0)
    assert not list(tmp_path.glob(".pred*"))  # no temporary file left


def test_time_and_batch_come_from_the_atlas_or_the_arguments(model, tmp_path):
    adata = _atlas(model)
    path = _write(adata, tmp_path / "atlas.h5ad")
    cmn.tl.predict_atlas(path, model, out=tmp_path / "own.zarr")  # the default block: all 150 cells at once
    time, batch = model.time_categories[1], adata.obs["batch"].iloc[0]
    cmn.tl.predict_atlas(path, model, out=tmp_path / "fixed.zarr", time=time, batch=batch, chunk_size=CHUNK)
    own, fixed = _read(tmp_path / "own.zarr").X, _read(tmp_path / "fixed.zarr").X
    np.testing.assert_array_equal(fixed, _in_memory(model, adata, time=time, batch=batch).to_numpy(np.float32))
    assert not np.allclose(own, fixed)  # the cells' own time points and batches were used before


@pytest.mark.parametrize("source", [".h5ad", ".zarr"])
def test_a_model_on_a_layer_reads_that_layer(model, tmp_path, monkeypatch, source):
    adata = _atlas(model)
    want = _in_memory(model, adata)
    adata.layers["lognorm"] = adata.X.copy()
    adata.X = sparse.csr_matrix(adata.shape, dtype=np.float32)  # zeros: X must not be read
    path = _write(adata, tmp_path / f"atlas{source}")
    monkeypatch.setitem(model.adata_manager.registry["setup_args"], "rna_layer", "lognorm")
    cmn.tl.predict_atlas(path, model, out=tmp_path / "pred.zarr", chunk_size=CHUNK)
    np.testing.assert_array_equal(_read(tmp_path / "pred.zarr").X, want.to_numpy(dtype=np.float32))


def test_bad_input_fails_before_writing(model, tmp_path, monkeypatch):
    adata = _atlas(model)
    path = _write(adata, tmp_path / "atlas.h5ad")
    few = _write(adata[:, adata.var_names[:5]].copy(), tmp_path / "few.zarr")
    target = tmp_path / "pred.zarr"
    with pytest.raises(ValueError, match=r"'\.h5ad' or '\.zarr'.*read_h5mu"):
        cmn.tl.predict_atlas(tmp_path / "atlas.h5mu", model, out=target)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cmn.tl.predict_atlas(tmp_path / "missing.h5ad", model, out=target)
    with pytest.raises(ValueError, match=r"must end in '\.zarr' or '\.h5ad'"):
        cmn.tl.predict_atlas(path, model, out=tmp_path / "pred.csv")
    with pytest.raises(ValueError, match="`out` is the atlas itself"):
        cmn.tl.predict_atlas(path, model, out=path, overwrite=True)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        cmn.tl.predict_atlas(path, model, out=target, chunk_size=0)
    with pytest.raises(ValueError, match="below `min_coverage=0.5`"):  # 5 of 30 genes
        cmn.tl.predict_atlas(few, model, out=target)
    with monkeypatch.context() as m:  # a model trained on a layer the atlas does not have
        m.setitem(model.adata_manager.registry["setup_args"], "rna_layer", "lognorm")
        with pytest.raises(KeyError, match="'lognorm'.*does not have"):
            cmn.tl.predict_atlas(path, model, out=target)
    target.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cmn.tl.predict_atlas(path, model, out=target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.h5ad", "few.zarr", "pred.zarr"]


def test_an_atlas_that_mixes_counts_and_normalised_rows_is_refused(model, tmp_path):
    adata = _atlas(model)
    counts = _atlas(model, counts=True)
    adata.X = sparse.vstack([adata.X[:CHUNK], counts.X[CHUNK:]]).tocsr()  # counts from the second block on
    path = _write(adata, tmp_path / "atlas.zarr")
    with pytest.raises(ValueError, match=r"cells 40-79 of atlas\.zarr look like raw counts"):
        cmn.tl.predict_atlas(path, model, out=tmp_path / "pred.h5ad", chunk_size=CHUNK)
    assert not (tmp_path / "pred.h5ad").exists()
    assert not list(tmp_path.glob(".pred*"))


@pytest.mark.parametrize("index_dtype", ["object", "str"])
def test_h5ad_cell_names_are_read_block_by_block_in_either_string_encoding(model, tmp_path, index_dtype):
    import h5py

    adata = _atlas(model)
    adata.obs_names = pd.Index([str(c) for c in adata.obs_names], dtype=index_dtype)
    path = _write(adata, tmp_path / "atlas.h5ad")
    with h5py.File(path) as f:
        encoding = f["obs"][f["obs"].attrs["_index"]].attrs["encoding-type"]
    assert encoding in ("string-array", "nullable-string-array")
    cmn.tl.predict_atlas(path, model, out=tmp_path / "pred.zarr", chunk_size=CHUNK)
    got = _read(tmp_path / "pred.zarr")
    assert list(got.obs_names) == list(adata.obs_names)
    np.testing.assert_array_equal(got.X, _in_memory(model, adata).to_numpy(np.float32))


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_default_block_holds_about_twenty_million_values(tmp_path, suffix):
    import h5py
    import zarr

    from crossmodalnet.tl._atlas import BLOCK_VALUES, MAX_BLOCK_CELLS, default_chunk_size

    assert (BLOCK_VALUES, MAX_BLOCK_CELLS) == (20_000_000, 50_000)
    dense = np.zeros((3_000, 2_000), dtype=np.float32)
    dense[:, :40] = 1.0  # 40 non-zeros per cell
    layers = {"dense": dense, "csr": sparse.csr_matrix(dense), "csc": sparse.csc_matrix(dense)}
    wide_x = np.zeros((10, 25_000), dtype=np.float32)
    wide_x[:, :5_000] = 1.0  # 5,000 non-zeros per cell
    wide = ad.AnnData(X=wide_x, layers={"csr": sparse.csr_matrix(wide_x)})
    path = _write(ad.AnnData(X=dense, layers=layers), tmp_path / f"a{suffix}")
    wide_path = _write(wide, tmp_path / f"wide{suffix}")

    def root(p):
        return h5py.File(p) if suffix == ".h5ad" else zarr.open_group(p, mode="r")

    f, g = root(path), root(wide_path)
    assert default_chunk_size(f["layers/dense"]) == 10_000  # 20,000,000 / 2,000 values per cell
    assert default_chunk_size(f["layers/csr"]) == MAX_BLOCK_CELLS  # 500,000 by the 40 non-zeros, capped
    assert default_chunk_size(f["layers/csc"]) == MAX_BLOCK_CELLS
    assert default_chunk_size(g["X"]) == 1_000  # a dense 25,000-gene matrix: 800, at least 1,000
    assert default_chunk_size(g["layers/csr"]) == 4_000  # 5,000 non-zeros per cell


# --- uncertainty, block by block ------------------------------------------------------------------------------------
def _layer_names(adata: ad.AnnData) -> list[str]:
    return sorted(k for k in adata.layers.keys() if k is not None)  # newer anndata lists X as the layer None


def _in_memory_intervals(model, adata: ad.AnnData, **kwargs) -> dict[str, np.ndarray]:
    mdata = cmn.pp.to_mudata(adata.copy())
    cmn.tl.predict_protein(mdata, model, batch_size=BATCH, uncertainty=True, **kwargs)
    slots = {
        "mean": "cmn_protein",
        "std": "cmn_protein_std",
        "lower": "cmn_protein_lower",
        "upper": "cmn_protein_upper",
    }
    out = {name: mdata.obsm[slot].to_numpy(dtype=np.float32) for name, slot in slots.items()}
    out["record"] = mdata.uns["cmn_protein"]["uncertainty"]
    return out


@pytest.mark.parametrize(("out", "other_genes"), [(".zarr", False), (".h5ad", True)])
def test_atlas_intervals_of_one_block_equal_in_memory(model, tmp_path, out, other_genes):
    # with genes missing, the imputation spread and the multiplier's factor for them are exercised too
    genes = list(model.adata["rna"].var_names[::-1][:25]) if other_genes else None
    adata = _atlas(model, genes=genes)
    want = _in_memory_intervals(model, adata, rng=3, level=0.8)
    path = _write(adata, tmp_path / "atlas.zarr")
    target = tmp_path / f"pred{out}"
    cmn.tl.predict_atlas(path, model, out=target, batch_size=BATCH, chunk_size=500, uncertainty=True, rng=3, level=0.8)
    got = _read(target)
    np.testing.assert_array_equal(got.X, want["mean"])
    assert _layer_names(got) == ["lower", "std", "upper"]
    for name in ("std", "lower", "upper"):
        assert got.layers[name].dtype == np.float32
        np.testing.assert_array_equal(got.layers[name], want[name])
    assert (got.layers["std"] > 0).all()
    record, expected = got.uns["cmn_protein"]["uncertainty"], want["record"]
    assert record["n_missing_genes"] == (5 if other_genes else 0) == expected["n_missing_genes"]
    for key in ("level", "method", "calibration", "n_calibration_cells"):
        assert record[key] == expected[key]
    np.testing.assert_array_equal(record["multipliers"], expected["multipliers"])
    np.testing.assert_array_equal(record["levels"], expected["levels"])
    params = got.uns["cmn_protein"]["params"]
    assert (params["uncertainty"], params["level"], params["rng"]) == (True, 0.8, 3)


def test_atlas_intervals_block_by_block(model, tmp_path):
    adata = _atlas(model)
    path = _write(adata, tmp_path / "atlas.h5ad")
    whole = _in_memory_intervals(model, adata, rng=3)
    cmn.tl.predict_atlas(
        path, model, out=tmp_path / "a.zarr", batch_size=BATCH, chunk_size=CHUNK, uncertainty=True, rng=3
    )
    got = _read(tmp_path / "a.zarr")
    # the predictions are the in-memory ones; the spread is drawn per block, so it is another draw of the same spread
    np.testing.assert_array_equal(got.X, _in_memory(model, adata).to_numpy(np.float32))
    np.testing.assert_array_equal(got.X, whole["mean"])
    ratio = np.log(got.layers["std"] / whole["std"])
    assert np.median(np.abs(ratio)) < 0.2, np.median(np.abs(ratio))
    assert not np.array_equal(got.layers["std"][CHUNK:], whole["std"][CHUNK:])  # later blocks: their own seeds
    record = got.uns["cmn_protein"]["uncertainty"]
    k = np.asarray(record["multipliers"])[list(record["levels"]).index(0.9)]
    np.testing.assert_allclose(got.layers["lower"], got.X - k * got.layers["std"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.layers["upper"], got.X + k * got.layers["std"], rtol=1e-5, atol=1e-5)
    # the same file, seed and blocks give the same file; another seed other intervals around the same predictions
    cmn.tl.predict_atlas(
        path, model, out=tmp_path / "b.h5ad", batch_size=BATCH, chunk_size=CHUNK, uncertainty=True, rng=3
    )
    cmn.tl.predict_atlas(
        path, model, out=tmp_path / "c.zarr", batch_size=BATCH, chunk_size=CHUNK, uncertainty=True, rng=4
    )
    again, other = _read(tmp_path / "b.h5ad"), _read(tmp_path / "c.zarr")
    for name in ("std", "lower", "upper"):
        np.testing.assert_array_equal(again.layers[name], got.layers[name])
    np.testing.assert_array_equal(other.X, got.X)
    assert not np.array_equal(other.layers["std"], got.layers["std"])


def test_atlas_uncertainty_errors_come_before_writing(model, tmp_path, monkeypatch):
    from crossmodalnet.model import CrossmodalNet

    path = _write(_atlas(model), tmp_path / "atlas.h5ad")
    target = tmp_path / "pred.zarr"
    with pytest.raises(ValueError, match="`level` must be a number strictly between 0 and 1"):
        cmn.tl.predict_atlas(path, model, out=target, uncertainty=True, level=1.5)
    with monkeypatch.context() as m:  # saved without a calibration
        m.setattr(model, "uncertainty_", None)
        model.save(tmp_path / "m", overwrite=True)
    loaded = CrossmodalNet.load(tmp_path / "m")  # no training data to calibrate on
    with pytest.raises(ValueError, match="needs a calibrated model.*calibrate_uncertainty"):
        cmn.tl.predict_atlas(path, loaded, out=target, uncertainty=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.h5ad", "m"]
    cmn.tl.predict_atlas(path, loaded, out=target)  # without uncertainty it predicts
    assert _layer_names(_read(target)) == []


def test_atlas_intervals_calibrate_missing_genes_once(model, tmp_path, monkeypatch):
    adata = _atlas(model, genes=list(model.adata["rna"].var_names[::-1][:25]))
    path = _write(adata, tmp_path / "atlas.h5ad")
    calls = []
    factor = type(model)._missing_gene_factor

    def counted(self, missing_genes, **kwargs):
        calls.append((list(missing_genes), kwargs["seed"]))
        return factor(self, missing_genes, **kwargs)

    monkeypatch.setattr(type(model), "_missing_gene_factor", counted)
    cmn.tl.predict_atlas(path, model, out=tmp_path / "pred.zarr", chunk_size=CHUNK, uncertainty=True, rng=5)
    got = _read(tmp_path / "pred.zarr")
    # four blocks, one multiplier for the 5 missing genes, from `rng` itself as in memory
    assert len(calls) == 1
    assert sorted(calls[0][0]) == sorted(set(model.adata["rna"].var_names) - set(adata.var_names))
    assert calls[0][1] == 5
    assert got.uns["cmn_protein"]["uncertainty"]["n_missing_genes"] == 5
    assert np.isfinite(got.layers["std"]).all()
    assert (got.layers["std"] > 0).all()
