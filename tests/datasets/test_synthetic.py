from __future__ import annotations

import re

import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse as sp

import crossmodalnet as cmn

SMALL = {"n_obs": 200, "n_genes": 60, "n_proteins": 8}
MEDIUM = {"n_obs": 1500, "n_genes": 300, "n_proteins": 12, "n_isotypes": 2}


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _lognorm_rna(mdata: md.MuData) -> np.ndarray:
    x = _dense(mdata["rna"].X)
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1.0) * 1e4)


def _clr_prot(mdata: md.MuData) -> np.ndarray:
    y = np.log1p(_dense(mdata["prot"].X))
    return y - y.mean(axis=1, keepdims=True)


def _corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``a`` with every column of ``b``, shape (a_cols, b_cols)."""
    az = (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1.0)
    bz = (b - b.mean(0)) / np.where(b.std(0) > 0, b.std(0), 1.0)
    return az.T @ bz / a.shape[0]


@pytest.fixture(scope="module")
def small() -> md.MuData:
    return cmn.datasets.synthetic_cite(**SMALL, n_isotypes=2, rng=0)


@pytest.fixture(scope="module")
def medium() -> md.MuData:
    return cmn.datasets.synthetic_cite(**MEDIUM, rng=1)


def test_exports():
    assert "synthetic_cite" in cmn.datasets.__all__
    assert "synthetic_empty_droplets" in cmn.datasets.__all__


def test_shapes_and_names(small):
    assert set(small.mod) == {"rna", "prot"}
    assert small["rna"].shape == (200, 60)
    assert small["prot"].shape == (200, 10)
    assert small.n_obs == 200
    assert small.obs_names[:2].tolist() == ["cell_0000", "cell_0001"]
    assert small["rna"].obs_names.equals(small.obs_names)
    assert small["prot"].obs_names.equals(small.obs_names)
    assert small["rna"].var_names[[0, -1]].tolist() == ["gene_0000", "gene_0059"]
    gene_ids = small["rna"].var["gene_ids"]
    assert gene_ids.is_unique
    assert all(re.fullmatch(r"ENSG9\d{10}", g) for g in gene_ids)
    prot_var = small["prot"].var
    assert prot_var["isotype"].dtype == bool
    assert prot_var["isotype"].tolist() == [False] * 8 + [True, True]
    assert prot_var_names_ok(prot_var)


def prot_var_names_ok(prot_var: pd.DataFrame) -> bool:
    for name, row in prot_var.iterrows():
        if row["isotype"]:
            ok = re.fullmatch(r"Isotype_\d+", name) is not None and row["coding_gene"] == ""
        elif row["coding_gene"]:
            ok = name == f"{row['coding_gene']}-prot"
        else:
            ok = re.fullmatch(r"prot_\d{3}", name) is not None
        if not ok:
            return False
    return True


def test_obs_columns(small):
    for obs in (small.obs, small["rna"].obs, small["prot"].obs):
        assert pd.api.types.is_integer_dtype(obs["time"])
        assert sorted(obs["time"].unique().tolist()) == [2, 3, 4]
        assert isinstance(obs["cell_state"].dtype, pd.CategoricalDtype)
        assert obs["cell_state"].cat.categories.tolist() == [f"state_{k}" for k in range(5)]
        assert obs["batch"].cat.categories.tolist() == ["batch_0"]
    np.testing.assert_array_equal(small.obs["time"].to_numpy(), small["rna"].obs["time"].to_numpy())
    np.testing.assert_array_equal(small.obs["cell_state"].to_numpy(), small["prot"].obs["cell_state"].to_numpy())
    # time points are balanced
    assert small.obs["time"].value_counts().tolist() == [67, 67, 66]


def test_batches():
    mdata = cmn.datasets.synthetic_cite(**SMALL, n_batches=3, rng=2)
    assert mdata.obs["batch"].cat.categories.tolist() == ["batch_0", "batch_1", "batch_2"]
    assert mdata.obs["batch"].value_counts().min() >= 66
    np.testing.assert_array_equal(mdata["rna"].obs["batch"].to_numpy(), mdata.obs["batch"].to_numpy())


@pytest.mark.parametrize("is_sparse", [True, False])
def test_raw_counts(is_sparse):
    mdata = cmn.datasets.synthetic_cite(**SMALL, sparse=is_sparse, rng=3)
    for mod in ("rna", "prot"):
        x = mdata[mod].X
        assert sp.issparse(x) is is_sparse
        if is_sparse:
            assert isinstance(x, sp.csr_matrix)
        assert x.dtype == np.float32
        dense = _dense(x)
        assert dense.min() >= 0
        np.testing.assert_array_equal(dense, np.round(dense))
        assert dense.sum() > 0
    rna = _dense(mdata["rna"].X)
    assert 0.05 < np.count_nonzero(rna) / rna.size < 0.6


def test_sparse_flag_only_changes_storage():
    a = cmn.datasets.synthetic_cite(**SMALL, sparse=True, rng=4)
    b = cmn.datasets.synthetic_cite(**SMALL, sparse=False, rng=4)
    np.testing.assert_array_equal(_dense(a["rna"].X), b["rna"].X)
    np.testing.assert_array_equal(_dense(a["prot"].X), b["prot"].X)


def test_determinism_and_seed_sensitivity():
    a = cmn.datasets.synthetic_cite(**SMALL, rng=5)
    b = cmn.datasets.synthetic_cite(**SMALL, rng=5)
    c = cmn.datasets.synthetic_cite(**SMALL, rng=6)
    np.testing.assert_array_equal(_dense(a["rna"].X), _dense(b["rna"].X))
    np.testing.assert_array_equal(_dense(a["prot"].X), _dense(b["prot"].X))
    assert a["prot"].var_names.equals(b["prot"].var_names)
    np.testing.assert_array_equal(a.obs["cell_state"].to_numpy(), b.obs["cell_state"].to_numpy())
    np.testing.assert_array_equal(a.uns["cmn_synthetic"]["time_effects"], b.uns["cmn_synthetic"]["time_effects"])
    assert not np.array_equal(_dense(a["rna"].X), _dense(c["rna"].X))
    assert not np.array_equal(_dense(a["prot"].X), _dense(c["prot"].X))


def test_generator_and_none_rng():
    gen = np.random.default_rng(7)
    a = cmn.datasets.synthetic_cite(**SMALL, rng=gen)
    b = cmn.datasets.synthetic_cite(**SMALL, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(_dense(a["rna"].X), _dense(b["rna"].X))
    assert a.uns["cmn_synthetic"]["params"]["rng"] == -1
    c = cmn.datasets.synthetic_cite(**SMALL, rng=None)
    assert c["rna"].shape == (200, 60)
    assert c.uns["cmn_synthetic"]["params"]["rng"] == -1


def test_truth_structure(small):
    truth = small.uns["cmn_synthetic"]
    assert set(truth) >= {"driver_genes", "driver_kind", "time_values", "time_effects", "protein_background", "params"}
    prot_names = small["prot"].var_names
    kinds = np.asarray(truth["driver_kind"])
    assert kinds.shape == (10,)
    assert kinds[-2:].tolist() == ["isotype", "isotype"]
    assert set(kinds[:8]) == {"own_gene", "other", "interaction"}
    assert set(truth["driver_genes"]) == set(prot_names[:8])
    gene_names = set(small["rna"].var_names)
    all_drivers = []
    for j, name in enumerate(prot_names[:8]):
        drivers = np.asarray(truth["driver_genes"][name])
        assert drivers.shape == (3,)
        assert set(drivers) <= gene_names
        all_drivers.extend(drivers)
        coding = small["prot"].var["coding_gene"].iloc[j]
        if kinds[j] == "own_gene":
            assert drivers[0] == coding
            assert name == f"{coding}-prot"
        else:
            assert coding == ""
    assert len(set(all_drivers)) == len(all_drivers)  # disjoint: 8 * 3 <= 60 genes
    np.testing.assert_array_equal(truth["time_values"], [2, 3, 4])
    time_effects = np.asarray(truth["time_effects"])
    assert time_effects.shape == (3, 10)
    np.testing.assert_array_equal(time_effects[0], 0.0)
    np.testing.assert_array_equal(time_effects[:, 8:], 0.0)
    assert np.abs(time_effects[2, :8]).min() > 0.3
    background = np.asarray(truth["protein_background"])
    assert background.shape == (10,)
    assert (background > 0).all()
    params = truth["params"]
    assert params["n_obs"] == 200
    assert params["n_isotypes"] == 2
    assert params["density"] == -1.0
    assert params["rng"] == 0
    assert params["sparse"] is True


def test_driver_genes_are_expressed(medium):
    truth = medium.uns["cmn_synthetic"]
    gene_mean = pd.Series(_dense(medium["rna"].X).mean(axis=0), index=medium["rna"].var_names)
    drivers = np.concatenate([np.asarray(v) for v in truth["driver_genes"].values()])
    assert gene_mean[drivers].min() >= gene_mean.quantile(0.3)
    assert gene_mean[drivers].median() > 1.5 * gene_mean.median()


def test_h5mu_roundtrip(small, tmp_path):
    path = tmp_path / "synthetic.h5mu"
    small.write_h5mu(path)
    back = md.read_h5mu(path)
    assert back["rna"].shape == small["rna"].shape
    np.testing.assert_array_equal(_dense(back["prot"].X), _dense(small["prot"].X))
    assert back.obs["time"].tolist() == small.obs["time"].tolist()
    truth, truth_back = small.uns["cmn_synthetic"], back.uns["cmn_synthetic"]
    np.testing.assert_allclose(truth_back["time_effects"], truth["time_effects"])
    np.testing.assert_allclose(truth_back["protein_background"], truth["protein_background"])
    np.testing.assert_array_equal(np.asarray(truth_back["driver_kind"]).astype(str), truth["driver_kind"])
    for name, genes in truth["driver_genes"].items():
        np.testing.assert_array_equal(np.asarray(truth_back["driver_genes"][name]).astype(str), genes)
    assert dict(truth_back["params"]) == truth["params"]


def test_planted_driver_signal(medium):
    truth = medium.uns["cmn_synthetic"]
    rna = _lognorm_rna(medium)
    prot = _clr_prot(medium)
    gene_index = {g: i for i, g in enumerate(medium["rna"].var_names)}
    drivers = {name: [gene_index[g] for g in genes] for name, genes in truth["driver_genes"].items()}
    driver_set = {i for ids in drivers.values() for i in ids}
    non_drivers = np.array(sorted(set(range(rna.shape[1])) - driver_set))
    corr = np.abs(_corr_columns(prot[:, :12], rna))
    rng = np.random.default_rng(0)
    best_driver, best_random = [], []
    for j, name in enumerate(medium["prot"].var_names[:12]):
        best_driver.append(corr[j, drivers[name]].max())
        best_random.append(corr[j, rng.choice(non_drivers, size=3, replace=False)].max())
    assert np.mean(best_driver) > 0.3
    assert np.mean(best_driver) > 2 * np.mean(best_random)
    assert np.mean(best_driver) - np.mean(best_random) > 0.15


def test_ridge_on_rna_predicts_proteins(medium):
    rna = _lognorm_rna(medium)
    prot = np.log1p(_dense(medium["prot"].X)[:, :12])
    rna = (rna - rna.mean(0)) / np.where(rna.std(0) > 0, rna.std(0), 1.0)
    train, test = np.arange(1000), np.arange(1000, 1500)
    ym = prot[train].mean(0)
    coef = np.linalg.solve(rna[train].T @ rna[train] + 300.0 * np.eye(rna.shape[1]), rna[train].T @ (prot[train] - ym))
    pred = rna[test] @ coef + ym
    r = np.array([np.corrcoef(pred[:, j], prot[test, j])[0, 1] for j in range(12)])
    assert r.mean() > 0.4
    assert r.min() > 0.1


def test_isotypes_carry_no_driver_signal(medium):
    rna = _lognorm_rna(medium)
    iso = np.log1p(_dense(medium["prot"].X)[:, 12:])
    corr_iso = np.abs(_corr_columns(iso, rna))
    assert corr_iso.max() < 0.15
    assert np.asarray(medium.uns["cmn_synthetic"]["time_effects"])[:, 12:].max() == 0.0
    # isotypes follow the droplet's technical factor (shared with the protein library size)
    total = np.log(_dense(medium["prot"].X)[:, :12].sum(axis=1))
    assert all(np.corrcoef(iso[:, k], total)[0, 1] > 0.1 for k in range(2))


def _mean_by_time(mdata: md.MuData) -> np.ndarray:
    y = np.log1p(_dense(mdata["prot"].X))
    times = mdata.obs["time"].to_numpy()
    return np.stack([y[times == t].mean(axis=0) for t in np.unique(times)])


def test_time_signal_is_smooth(medium):
    means = _mean_by_time(medium)[:, :12]
    assert means.shape == (3, 12)
    spread = np.abs(means[2] - means[0])
    assert np.median(spread) > 0.2
    mid_vs_interp = np.abs(means[1] - 0.5 * (means[0] + means[2]))
    mid_vs_ends = np.minimum(np.abs(means[1] - means[0]), np.abs(means[1] - means[2]))
    assert np.mean(mid_vs_interp < mid_vs_ends) >= 0.75
    assert mid_vs_interp.mean() < 0.5 * mid_vs_ends.mean()


def test_time_effect_zero_removes_time_signal():
    flat = cmn.datasets.synthetic_cite(**MEDIUM, time_effect=0.0, rng=1)
    np.testing.assert_array_equal(flat.uns["cmn_synthetic"]["time_effects"], 0.0)
    means = _mean_by_time(flat)[:, :12]
    assert np.abs(means - means.mean(0)).max() < 0.1


def test_rna_carries_time_signal(medium):
    rna = _lognorm_rna(medium)
    gene_index = medium["rna"].var_names.get_indexer(medium.uns["cmn_synthetic"]["rna_time_genes"])
    assert len(gene_index) == 30
    times = medium.obs["time"].to_numpy()
    first, last = rna[times == 2].mean(0), rna[times == 4].mean(0)
    others = np.setdiff1d(np.arange(rna.shape[1]), gene_index)
    shift = np.abs(last - first)
    assert np.median(shift[gene_index]) > 2 * np.median(shift[others])


@pytest.mark.parametrize("density", [0.05, 0.5])
def test_density(density):
    mdata = cmn.datasets.synthetic_cite(n_obs=300, n_genes=200, n_proteins=4, density=density, rng=8)
    x = mdata["rna"].X
    assert abs(x.nnz / (x.shape[0] * x.shape[1]) - density) < 0.05
    assert mdata.uns["cmn_synthetic"]["params"]["density"] == density


def test_single_time_point_and_shared_drivers():
    mdata = cmn.datasets.synthetic_cite(n_obs=50, n_genes=10, n_proteins=6, n_drivers=2, n_time_points=1, rng=9)
    assert mdata.obs["time"].unique().tolist() == [2]
    truth = mdata.uns["cmn_synthetic"]
    assert np.asarray(truth["time_effects"]).shape == (1, 6)
    assert all(len(set(g)) == 2 for g in truth["driver_genes"].values())
    assert mdata["prot"].var_names.is_unique


def test_shared_drivers_keep_coding_genes_unique():
    mdata = cmn.datasets.synthetic_cite(n_obs=30, n_genes=2, n_proteins=9, n_drivers=1, rng=11)
    var = mdata["prot"].var
    kinds = np.asarray(mdata.uns["cmn_synthetic"]["driver_kind"])
    assert var.index.is_unique
    coding = var["coding_gene"][var["coding_gene"] != ""]
    assert coding.is_unique
    assert 1 <= len(coding) <= 2
    np.testing.assert_array_equal(kinds == "own_gene", (var["coding_gene"] != "").to_numpy())


def test_single_driver_has_no_interaction():
    mdata = cmn.datasets.synthetic_cite(**SMALL, n_drivers=1, rng=10)
    assert set(mdata.uns["cmn_synthetic"]["driver_kind"]) == {"own_gene", "other"}


def test_empty_droplets(small):
    empty = cmn.datasets.synthetic_empty_droplets(small, n_obs=300, rng=0)
    assert empty.shape == (300, 10)
    assert empty.var_names.equals(small["prot"].var_names)
    pd.testing.assert_frame_equal(empty.var, small["prot"].var)
    assert empty.obs_names[:2].tolist() == ["empty_0000", "empty_0001"]
    assert sp.issparse(empty.X)
    assert empty.X.dtype == np.float32
    x = _dense(empty.X)
    np.testing.assert_array_equal(x, np.round(x))
    empty_totals = x.sum(axis=1)
    cell_totals = _dense(small["prot"].X).sum(axis=1)
    assert np.median(empty_totals) < 0.25 * np.median(cell_totals)
    # per-feature means follow the stored background rates
    background = np.asarray(small.uns["cmn_synthetic"]["protein_background"])
    assert np.corrcoef(x.mean(axis=0), background)[0, 1] > 0.9
    again = cmn.datasets.synthetic_empty_droplets(small, n_obs=300, rng=0)
    np.testing.assert_array_equal(_dense(again.X), x)


def test_empty_droplets_errors(small):
    with pytest.raises(ValueError, match="n_obs"):
        cmn.datasets.synthetic_empty_droplets(small, n_obs=0)
    with pytest.raises(ValueError, match="'prot' modality"):
        cmn.datasets.synthetic_empty_droplets(small["rna"])
    stripped = md.MuData({"prot": small["prot"].copy()})
    with pytest.raises(ValueError, match="protein_background"):
        cmn.datasets.synthetic_empty_droplets(stripped)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_obs": 1}, "n_obs"),
        ({"n_time_points": 0}, "n_time_points"),
        ({"n_obs": 3, "n_time_points": 4}, "n_time_points"),
        ({"n_genes": 5, "n_drivers": 6}, "n_drivers"),
        ({"n_drivers": 0}, "n_drivers"),
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"n_states": 0}, "n_states"),
        ({"n_batches": 0}, "n_batches"),
        ({"n_proteins": 0}, "n_proteins"),
        ({"n_isotypes": -1}, "n_isotypes"),
        ({"time_effect": -1.0}, "time_effect"),
        ({"time_effect": float("nan")}, "time_effect"),
        ({"rng": -3}, "rng"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cmn.datasets.synthetic_cite(**{**SMALL, **kwargs})


def test_argument_type_errors():
    with pytest.raises(TypeError, match="n_obs"):
        cmn.datasets.synthetic_cite(n_obs=10.5)
    with pytest.raises(TypeError, match="rng"):
        cmn.datasets.synthetic_cite(**SMALL, rng="seed")
    with pytest.raises(TypeError, match="sparse"):
        cmn.datasets.synthetic_cite(**SMALL, sparse="yes")


def test_programs_structure():
    kw = {"n_obs": 400, "n_genes": 150, "n_proteins": 10, "structure": "programs"}
    a = cmn.datasets.synthetic_cite(**kw, rng=3)
    b = cmn.datasets.synthetic_cite(**kw, rng=3)
    np.testing.assert_array_equal(a["prot"].X.toarray(), b["prot"].X.toarray())
    truth = a.uns["cmn_synthetic"]
    assert truth["params"]["structure"] == "programs"
    assert truth["program_weights"].shape == (10, 10)  # programs × proteins
    assert ((truth["own_share"] >= 0.3) & (truth["own_share"] <= 0.7)).all()
    assert (truth["driver_kind"] == "own_gene").all()
    coding = a["prot"].var["coding_gene"].to_numpy()
    assert len(set(coding)) == 10
    assert all(name == f"{g}-prot" for name, g in zip(a["prot"].var_names, coding, strict=True))
    assert all(list(truth["driver_genes"][p]) == [g] for p, g in zip(a["prot"].var_names, coding, strict=True))
    # each protein follows its own coding mRNA (positively) and shares low-rank structure with the others
    mdata = a.copy()
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    rna_x, prot = (sp.csr_matrix(mdata[k].X).toarray() for k in ("rna", "prot"))
    rna = pd.DataFrame(rna_x, columns=mdata["rna"].var_names)
    r_own = [np.corrcoef(rna[g], prot[:, j])[0, 1] for j, g in enumerate(coding)]
    assert np.mean(r_own) > 0.15
    sv = np.linalg.svd(prot - prot.mean(0), compute_uv=False)
    assert sv[0] ** 2 / np.sum(sv**2) > 0.15
    with pytest.raises(ValueError, match="structure"):
        cmn.datasets.synthetic_cite(n_obs=20, n_genes=10, n_proteins=2, structure="sparse")
