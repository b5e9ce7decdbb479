from __future__ import annotations

import warnings

import muon as mu
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal

import crossmodalnet as cmn


@pytest.fixture
def raw(raw_mdata):
    return raw_mdata.copy()


@pytest.fixture(scope="module")
def iso_mdata():
    """Raw counts with two isotype controls, and matching empty droplets."""
    mdata = cmn.datasets.synthetic_cite(n_obs=120, n_genes=30, n_proteins=6, n_isotypes=2, rng=3)
    empty = cmn.datasets.synthetic_empty_droplets(mdata, n_obs=300, rng=4)
    return mdata, empty


def _muon_dsb(prot, empty, **kwargs):
    prot = prot.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mu.prot.pp.dsb(prot, empty, random_state=0, **kwargs)
    return np.asarray(prot.X)


def _assert_unchanged(before, after):
    assert list(before.mod) == list(after.mod)
    for key in before.mod:
        assert_equal(before[key], after[key])
    assert set(before.uns) == set(after.uns)


def test_log_normalize(raw):
    counts = raw["rna"].X.copy()
    cmn.pp.log_normalize(raw)
    rna = raw["rna"]
    assert (rna.layers["counts"] != counts).nnz == 0
    totals = np.expm1(rna.X.toarray()).sum(axis=1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    assert rna.uns["cmn_preprocessing"] == {"method": "log1p_normalize_total", "target_sum": 1e4}
    with pytest.raises(ValueError, match="raw counts"):
        cmn.pp.log_normalize(raw, counts_layer=None)


def test_log_normalize_is_per_cell(raw):
    """Each cell's values depend on that cell only, so there is nothing to fit on training cells."""
    other = raw.copy()
    X = other["rna"].X.toarray()
    X[100:] *= 7
    other["rna"].X = X
    cmn.pp.log_normalize(raw)
    cmn.pp.log_normalize(other)
    np.testing.assert_allclose(raw["rna"].X[:100].toarray(), other["rna"].X[:100], rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_clr_matches_muon(raw, axis):
    ref = raw["prot"].copy()
    ref.X = ref.X.toarray()
    mu.prot.pp.clr(ref, axis=axis)
    cmn.pp.clr(raw, axis=axis)
    np.testing.assert_allclose(raw["prot"].X, ref.X, rtol=1e-5, atol=1e-5)
    rec = raw["prot"].uns["cmn_preprocessing"]
    assert rec["method"] == "clr"
    assert rec["axis"] == axis
    assert ("log_mean" in rec) == (axis == 0)


def test_clr_axis0_fits_on_training_cells_only(raw):
    train = np.zeros(raw.n_obs, dtype=bool)
    train[:150] = True
    perturbed = raw.copy()
    X = perturbed["prot"].X.toarray()
    X[~train] *= 20
    perturbed["prot"].X = X
    cmn.pp.clr(raw, axis=0, train_mask=train)
    cmn.pp.clr(perturbed, axis=0, train_mask=train)
    # test-cell counts do not reach the training cells' values ...
    np.testing.assert_array_equal(raw["prot"].X[train], perturbed["prot"].X[train])
    np.testing.assert_array_equal(
        raw["prot"].uns["cmn_preprocessing"]["log_mean"], perturbed["prot"].uns["cmn_preprocessing"]["log_mean"]
    )
    assert raw["prot"].uns["cmn_preprocessing"]["n_fit_cells"] == 150
    # ... and the statistic is the training cells' own
    counts = raw["prot"].layers["counts"].toarray()
    np.testing.assert_allclose(
        raw["prot"].uns["cmn_preprocessing"]["log_mean"], np.log1p(counts[train]).mean(axis=0), rtol=1e-5
    )


def test_clr_train_mask_as_column(raw):
    raw.obs["is_train"] = np.arange(raw.n_obs) % 4 != 0
    with pytest.raises(KeyError, match="not a column"):
        cmn.pp.clr(raw, axis=0, train_mask="nope")
    cmn.pp.clr(raw, axis=0, train_mask="is_train")
    assert raw["prot"].uns["cmn_preprocessing"]["n_fit_cells"] == 150


def test_clr_bad_mask(raw):
    with pytest.raises(ValueError, match="one value per cell"):
        cmn.pp.clr(raw, axis=0, train_mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        cmn.pp.clr(raw, axis=0, train_mask=np.arange(raw.n_obs))
    assert "counts" not in raw["prot"].layers  # nothing written on error


@pytest.mark.parametrize("isotypes", [[], ["Isotype_1", "Isotype_2"]])
def test_dsb_matches_muon(iso_mdata, isotypes):
    mdata, empty = iso_mdata
    mdata = mdata.copy()
    ref = _muon_dsb(mdata["prot"], empty, isotype_controls=isotypes or None)
    cmn.pp.dsb(mdata, empty=empty, isotype_controls=isotypes, set_aside_isotypes=False)
    np.testing.assert_allclose(mdata["prot"].X, ref, rtol=1e-4, atol=1e-4)
    rec = mdata["prot"].uns["cmn_preprocessing"]
    assert rec["method"] == "dsb"
    assert rec["fit_on"] == "all"
    assert rec["n_empty_droplets"] == 300
    assert ("isotype_controls" in rec) == bool(isotypes)


def test_dsb_fits_on_training_cells_only(iso_mdata):
    mdata, empty = iso_mdata
    iso = ["Isotype_1", "Isotype_2"]
    train = np.arange(mdata.n_obs) % 5 != 0
    a, b = mdata.copy(), mdata.copy()
    X = b["prot"].X.toarray()
    X[~train] = X[~train] * 10 + 50
    b["prot"].X = X
    cmn.pp.dsb(a, empty=empty, isotype_controls=iso, train_mask=train, set_aside_isotypes=False)
    cmn.pp.dsb(b, empty=empty, isotype_controls=iso, train_mask=train, set_aside_isotypes=False)
    np.testing.assert_array_equal(a["prot"].X[train], b["prot"].X[train])
    # on the training cells the result is muon's DSB run on the training cells alone
    ref = _muon_dsb(mdata["prot"][train], empty, isotype_controls=iso)
    np.testing.assert_allclose(a["prot"].X[train], ref, rtol=1e-4, atol=1e-4)
    # a test cell is transformed on its own: changing another test cell leaves it as it is
    c = mdata.copy()
    X = c["prot"].X.toarray()
    test_idx = np.flatnonzero(~train)
    X[test_idx[1:]] *= 3
    c["prot"].X = X
    cmn.pp.dsb(c, empty=empty, isotype_controls=iso, train_mask=train, set_aside_isotypes=False)
    np.testing.assert_allclose(c["prot"].X[test_idx[0]], a["prot"].X[test_idx[0]], rtol=1e-6)
    assert a["prot"].uns["cmn_preprocessing"]["n_fit_cells"] == int(train.sum())


def test_dsb_errors(iso_mdata):
    mdata, empty = iso_mdata
    mdata = mdata.copy()
    with pytest.raises(ValueError, match="lacks"):
        cmn.pp.dsb(mdata, empty=empty[:, :3])
    with pytest.raises(KeyError, match="isotype"):
        cmn.pp.dsb(mdata, empty=empty, isotype_controls=["nope"])
    with pytest.raises(TypeError, match="AnnData"):
        cmn.pp.dsb(mdata, empty=empty.X)
    assert "counts" not in mdata["prot"].layers


def test_normalize_protein_dispatch(iso_mdata):
    mdata, empty = iso_mdata
    with_empty = cmn.pp.normalize_protein(mdata, empty=empty, copy=True)
    assert with_empty["prot"].uns["cmn_preprocessing"]["method"] == "dsb"
    without = cmn.pp.normalize_protein(mdata, copy=True)
    record = dict(without["prot"].uns["cmn_preprocessing"])
    # the proteins CLR was computed over (issue 26 item 3: a model repeats the transform on raw counts)
    assert list(record.pop("protein_names")) == list(mdata["prot"].var_names)
    assert record == {"method": "clr", "axis": 1, "flavor": "seurat"}
    with pytest.raises(ValueError, match="empty droplets"):
        cmn.pp.normalize_protein(mdata, isotype_controls=["Isotype_1"], copy=True)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, e: cmn.pp.log_normalize(m, copy=True),
        lambda m, e: cmn.pp.clr(m, copy=True),
        lambda m, e: cmn.pp.clr(m, axis=0, copy=True),
        lambda m, e: cmn.pp.dsb(m, empty=e, copy=True),
        lambda m, e: cmn.pp.normalize_protein(m, copy=True),
    ],
)
def test_copy_leaves_input_untouched(iso_mdata, call):
    mdata, empty = iso_mdata
    before = mdata.copy()
    out = call(mdata, empty)
    assert out is not mdata
    _assert_unchanged(before, mdata)


def test_preprocessing_records_round_trip(iso_mdata, tmp_path):
    import mudata as md

    mdata, empty = iso_mdata
    mdata = mdata.copy()
    cmn.pp.log_normalize(mdata)
    cmn.pp.dsb(mdata, empty=empty, isotype_controls=["Isotype_1"], train_mask=np.arange(mdata.n_obs) % 2 == 0)
    mdata.write_h5mu(tmp_path / "pp.h5mu")
    back = md.read_h5mu(tmp_path / "pp.h5mu")
    for mod in ("rna", "prot"):
        rec, got = mdata[mod].uns["cmn_preprocessing"], back[mod].uns["cmn_preprocessing"]
        assert set(rec) == set(got)
        for k, v in rec.items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(got[k]))
    np.testing.assert_array_equal(back["prot"].X, mdata["prot"].X)


def test_dsb_detects_and_sets_isotypes_aside(iso_mdata, caplog):
    """Issue 14 item 4: isotypes are found by name and moved out of the protein targets by default."""
    mdata, empty = iso_mdata
    explicit = mdata.copy()
    cmn.pp.dsb(explicit, empty=empty, isotype_controls=["Isotype_1", "Isotype_2"], set_aside_isotypes=False)
    mdata = mdata.copy()
    n_prot = mdata["prot"].n_vars
    with caplog.at_level("INFO", logger="crossmodalnet"):
        cmn.pp.dsb(mdata, empty=empty)
    assert "isotype controls detected by name: ['Isotype_1', 'Isotype_2']" in caplog.text
    prot = mdata["prot"]
    assert prot.n_vars == n_prot - 2
    assert not prot.var_names.str.startswith("Isotype").any()
    assert mdata.n_vars == mdata["rna"].n_vars + prot.n_vars
    aside = prot.obsm["cmn_isotype_controls"]
    assert list(aside.columns) == ["Isotype_1", "Isotype_2"]
    # the detected isotypes were used in the denoising exactly as if they had been named
    np.testing.assert_allclose(aside.to_numpy(), explicit["prot"][:, ["Isotype_1", "Isotype_2"]].X, rtol=1e-6)
    np.testing.assert_allclose(prot.X, explicit["prot"][:, prot.var_names].X, rtol=1e-6)
    assert prot.uns["cmn_preprocessing"]["isotypes_set_aside"] is True
    assert list(prot.uns["cmn_preprocessing"]["isotype_controls"]) == ["Isotype_1", "Isotype_2"]


def test_control_feature_names_of_real_panels():
    """Issue 14 item 4: real isotype names (PBMC1k v3, Tsang dsb panel) and hashtags; IgA/IgD/IgM are markers."""
    import pandas as pd

    from crossmodalnet._utils import detect_control_features

    names = [
        "CD3_TotalSeqB", "IgG2a_control_TotalSeqB", "IgG1_control_TotalSeqB", "IgG2b_control_TotalSeqB",
        "MouseIgG1kappaisotype_PROT", "Mouse IgG2bkIsotype_PROT", "RatIgG2bkIsotype_PROT", "IgA_PROT", "IgD_PROT",
        "IgM_PROT", "HTO_1", "Hashtag2", "B0251-anti-mouse-Hashtag1", "CD45RA", "hash_A",
    ]  # fmt: skip
    var = pd.DataFrame({"feature_types": ["ADT"] * 14 + ["Multiplexing Capture"]}, index=names)
    iso, hto = detect_control_features(var)
    assert iso == names[1:7]
    assert hto == ["HTO_1", "Hashtag2", "B0251-anti-mouse-Hashtag1", "hash_A"]


def test_bare_isotype_subclasses_are_controls():
    """Issue 26 item 2: ECCITE-seq's bare `IgG1`/`IgG2a` and species-prefixed names; IgG/IgA/IgD/IgM and FceRIa are markers."""
    import pandas as pd

    from crossmodalnet._utils import detect_control_features

    controls = [
        "IgG1", "IgG2a", "IgG2b", "IgG1_kappa", "IgG2a-k", "Mouse_IgG1", "Rat IgG2b", "ADT_IgG1_A0090",
        "ADT_Rat_IgG2a_A0122", "IgG1_TotalSeqB",
    ]  # fmt: skip
    markers = ["IgG", "IgA", "IgD", "IgM", "IgD_PROT", "FceRIa", "FcεRIα", "CD19", "ADT_CD19_A0093", "KLRG1"]
    iso, hto = detect_control_features(pd.DataFrame(index=controls + markers))
    assert iso == controls
    assert hto == []


def test_log_normalize_accepts_scanpy_counts_layer(raw_mdata):
    """Issue 14 item 7: raw counts in .X with a copy in layers['counts'] (scanpy's convention) are accepted."""
    mdata = raw_mdata.copy()
    mdata["rna"].layers["counts"] = mdata["rna"].X.copy()
    expected = cmn.pp.log_normalize(raw_mdata.copy(), copy=True)
    cmn.pp.log_normalize(mdata)
    np.testing.assert_allclose(mdata["rna"].X.toarray(), expected["rna"].X.toarray(), rtol=1e-6)
    np.testing.assert_array_equal(mdata["rna"].layers["counts"].toarray(), raw_mdata["rna"].X.toarray())
    # a counts layer that is not the counts of .X still refuses, and leaves the data as it was
    other = raw_mdata.copy()
    other["rna"].layers["counts"] = other["rna"].X * 2
    with pytest.raises(ValueError, match="differs from `.X`"):
        cmn.pp.log_normalize(other)
    np.testing.assert_array_equal(other["rna"].X.toarray(), raw_mdata["rna"].X.toarray())


def test_log_normalize_side_effects_on_the_users_anndata(raw_mdata):
    """Issue 14 item 9: a MuData holds the user's AnnData; copy=True leaves it untouched, copy=False changes it."""
    import mudata as md

    rna = raw_mdata["rna"].copy()
    mdata = md.MuData({"rna": rna})
    out = cmn.pp.log_normalize(mdata, copy=True)
    np.testing.assert_array_equal(rna.X.toarray(), raw_mdata["rna"].X.toarray())
    assert "counts" not in rna.layers
    assert out["rna"].X.max() < 20
    cmn.pp.log_normalize(mdata)
    assert rna.X.max() < 20  # documented: in place reaches the AnnData the MuData was built from


@pytest.mark.parametrize("axis", [0, 1])
def test_clr_with_not_measured(raw, axis):
    """NaN (a panel without the antibody) stays NaN; geometric means use the measured values only."""
    counts = raw["prot"].X.toarray().astype(np.float32)
    missing = np.zeros_like(counts, dtype=bool)
    missing[:40, 2] = True  # one panel lacks protein 2
    missing[5, :] = True  # a cell that measured no protein
    with_nan = raw.copy()
    with_nan["prot"].X = np.where(missing, np.nan, counts)
    cmn.pp.clr(with_nan, axis=axis)
    X = with_nan["prot"].X
    np.testing.assert_array_equal(np.isnan(X), missing)
    # the same as muon's CLR on the measured values alone
    if axis == 1:
        sub = raw["prot"][:40].copy()
        sub = sub[:, [j for j in range(sub.n_vars) if j != 2]].copy()
        sub.X = sub.X.toarray()
        mu.prot.pp.clr(sub, axis=1)
        rows = [i for i in range(40) if i != 5]
        np.testing.assert_allclose(X[rows][:, [j for j in range(X.shape[1]) if j != 2]], sub.X[rows], rtol=1e-5)
    else:
        keep = ~missing[:, 2]
        sub = raw["prot"][keep].copy()
        sub.X = sub.X.toarray()
        mu.prot.pp.clr(sub, axis=0)
        np.testing.assert_allclose(X[keep][:, 2], sub.X[:, 2], rtol=1e-5)
    np.testing.assert_array_equal(with_nan["prot"].layers["counts"][~missing], counts[~missing])
