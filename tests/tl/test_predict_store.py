"""``cmn.tl.predict_protein(..., out=...)``: predictions streamed block by block into an on-disk AnnData.

The store must hold what the in-memory writer puts in ``.obsm`` (cells × proteins, same names), for
dense, sparse and backed input, with gene matching and normalisation of a backed atlas done block by
block; a failed write leaves nothing at the target.
"""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pytest
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet._gene_matching import AlignedRows
from crossmodalnet.model import CrossmodalNet

BATCH = 37  # does not divide the number of cells
TOL = {"rtol": 1e-5, "atol": 1e-6}
SUFFIXES = (".zarr", ".h5ad")


@pytest.fixture(scope="module")
def model(covariate_model):
    return covariate_model


def _query(model, layout: str, *, genes=None, counts: bool = False) -> md.MuData:
    """RNA-only MuData of the model's cells (shuffled), with ``genes`` (default: the model's) as ``layout``."""
    order = np.random.default_rng(1).permutation(model.adata.n_obs)
    rna = model.adata["rna"][order].copy()
    for col in ("time", "batch"):
        rna.obs[col] = model.adata.obs[col].reindex(rna.obs_names).to_numpy()
    if counts:  # integer counts above 20 are recognised as raw counts, and normalised as the model's RNA was
        rna.X = 3 * rna.layers["counts"]
    rna.layers.clear(keep_x=True)
    if genes is not None:
        rna = rna[:, genes].copy()
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32) if layout == "csr" else np.asarray(rna.X.toarray(), np.float32)
    return cmn.pp.to_mudata(rna)


def _read(path):
    return ad.read_zarr(path) if path.suffix == ".zarr" else ad.read_h5ad(path)


@pytest.fixture
def backed(tmp_path):
    opened: list[md.MuData] = []

    def open_backed(mdata: md.MuData, name: str = "atlas.h5mu") -> md.MuData:
        mdata.write_h5mu(tmp_path / name)
        out = md.read_h5mu(tmp_path / name, backed="r")
        opened.append(out)
        return out

    yield open_backed
    for mdata in opened:
        mdata.file.close()


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("source", ["dense", "csr", "backed-csr", "backed-dense"])
def test_store_equals_in_memory(model, tmp_path, backed, source, suffix):
    mem = _query(model, source.removeprefix("backed-"))
    ref = mem.copy()
    cmn.tl.predict_protein(ref, model, batch_size=BATCH)
    want = ref.obsm["cmn_protein"]
    data = backed(mem) if source.startswith("backed") else mem.copy()
    if source.startswith("backed"):
        assert data["rna"].isbacked

    out = tmp_path / f"pred{suffix}"
    cmn.tl.predict_protein(data, model, batch_size=BATCH, out=out)
    got = _read(out)
    assert got.shape == (mem.n_obs, model.n_proteins)
    assert got.X.dtype == np.float32
    assert got.obs_names.equals(mem.obs_names)
    assert list(got.var_names) == list(want.columns) == list(model.protein_names)
    np.testing.assert_allclose(got.X, want.to_numpy(), **TOL)
    # the predictions are in the file, not in memory; the metadata is in both
    assert "cmn_protein" not in data.obsm
    assert data.uns["cmn_protein"]["params"]["out"] == str(out)
    assert got.uns["cmn_protein"]["params"]["out"] == str(out)
    assert list(got.uns["cmn_protein"]["protein_names"]) == list(model.protein_names)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_cells_without_rna_get_nan_rows(model, tmp_path, backed):
    """A CITE-seq MuData whose RNA lacks some cells: their rows are NaN, the others as in memory."""
    rna = _query(model, "csr")["rna"]
    prot = model.adata["prot"].copy()
    mem = md.MuData({"prot": prot, "rna": rna[10:].copy()})
    for col in ("time", "batch"):
        mem.obs[col] = model.adata.obs[col].reindex(mem.obs_names).to_numpy()
    cmn.tl.predict_protein(mem, model, batch_size=BATCH)
    want = mem.obsm["cmn_protein"].to_numpy()
    assert np.isnan(want).all(axis=1).sum() == 10

    out = tmp_path / "pred.zarr"
    cmn.tl.predict_protein(backed(mem), model, batch_size=BATCH, out=out)
    got = _read(out)
    assert got.obs_names.equals(mem.obs_names)
    np.testing.assert_array_equal(np.isnan(got.X), np.isnan(want))
    np.testing.assert_allclose(got.X, want, **TOL)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_backed_atlas_with_other_genes_is_matched_and_normalised_per_block(
    model, tmp_path, backed, monkeypatch, suffix
):
    """Raw counts, genes reversed, two model genes missing, one extra gene: matched block by block."""
    genes = list(model.adata["rna"].var_names[::-1][2:])
    mem = _query(model, "csr", genes=genes, counts=True)
    extra = ad.AnnData(sparse.csr_matrix(np.ones((mem.n_obs, 1), np.float32)), obs=mem["rna"].obs[[]])
    extra.var_names = ["NOT_A_MODEL_GENE"]
    rna = ad.concat([mem["rna"], extra], axis=1, merge="first")
    mem = cmn.pp.to_mudata(rna)
    with pytest.warns(UserWarning, match="filled with zeros"):
        cmn.tl.predict_protein(mem, model, batch_size=BATCH)
    want = mem.obsm["cmn_protein"].to_numpy()
    assert mem.uns["cmn_protein"]["coverage"] == pytest.approx(28 / 30)

    data = backed(mem)
    # no whole-matrix copy: the in-memory alignment is never called, and every read is one batch of rows
    monkeypatch.setattr("crossmodalnet.tl._utils.align_matrix", _fail)
    sizes: list[int] = []
    read = AlignedRows.__getitem__

    def recording(self, rows):
        block = read(self, rows)
        sizes.append(block.shape[0])
        return block

    monkeypatch.setattr(AlignedRows, "__getitem__", recording)
    out = tmp_path / f"pred{suffix}"
    with pytest.warns(UserWarning, match="filled with zeros"):
        cmn.tl.predict_protein(data, model, batch_size=BATCH, out=out)
    assert sum(sizes) == mem.n_obs
    assert max(sizes) <= BATCH
    np.testing.assert_allclose(_read(out).X, want, **TOL)
    assert data.uns["cmn_protein"]["genes"]["n_filled"] == 2

    # the backed in-memory writer streams the matching too
    sizes.clear()
    with pytest.warns(UserWarning, match="filled with zeros"):
        cmn.tl.predict_protein(data, model, batch_size=BATCH)
    assert max(sizes) <= BATCH
    np.testing.assert_allclose(data.obsm["cmn_protein"].to_numpy(), want, **TOL)


def _fail(*args, **kwargs):
    raise AssertionError("the whole matrix was aligned in memory")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_leaves_nothing(model, tmp_path, monkeypatch, suffix):
    mem = _query(model, "csr")
    out = tmp_path / f"pred{suffix}"
    blocks = CrossmodalNet._predict_blocks

    def failing(self, *args, **kwargs):
        for i, block in enumerate(blocks(self, *args, **kwargs)):
            if i == 2:
                raise RuntimeError("disk full")
            yield block

    monkeypatch.setattr(CrossmodalNet, "_predict_blocks", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        cmn.tl.predict_protein(mem, model, batch_size=BATCH, out=out)
    assert list(tmp_path.iterdir()) == []

    # an existing store is replaced only by a complete one
    monkeypatch.setattr(CrossmodalNet, "_predict_blocks", blocks)
    cmn.tl.predict_protein(mem, model, batch_size=BATCH, out=out)
    before = _read(out).X.copy()
    monkeypatch.setattr(CrossmodalNet, "_predict_blocks", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        cmn.tl.predict_protein(mem, model, batch_size=BATCH, out=out, overwrite=True, time=model.time_categories[0])
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    np.testing.assert_array_equal(_read(out).X, before)


def test_store_arguments_are_checked(model, tmp_path):
    mem = _query(model, "csr")
    with pytest.raises(ValueError, match=r"must end in '\.zarr' or '\.h5ad'"):
        cmn.tl.predict_protein(mem, model, out=tmp_path / "pred.csv")
    with pytest.raises(ValueError, match="`uncertainty=True` cannot be written to `out`"):
        cmn.tl.predict_protein(mem, model, out=tmp_path / "pred.zarr", uncertainty=True)
    with pytest.raises(ValueError, match="`add_to`"):
        cmn.tl.predict_protein(mem, model, out=tmp_path / "pred.zarr", add_to="obs")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cmn.tl.predict_protein(mem, model, out=tmp_path / "missing" / "pred.zarr")
    (tmp_path / "pred.h5ad").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cmn.tl.predict_protein(mem, model, out=tmp_path / "pred.h5ad")
    assert (tmp_path / "pred.h5ad").read_text() == "old"
    cmn.tl.predict_protein(mem, model, out=tmp_path / "pred.h5ad", overwrite=True)
    assert ad.read_h5ad(tmp_path / "pred.h5ad").shape == (mem.n_obs, model.n_proteins)
