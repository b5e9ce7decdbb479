"""`cmn.pp.harmonize_proteins`: panel names to one vocabulary, every match reported, nothing merged by guesswork."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PANELS = {"bmmc": "bmmc_cite_600/adt.h5ad", "pbmc": "pbmc1k_protein_v3/adt.h5ad", "dsb": "dsb_tsang_87ab/cells.h5ad"}


def _harmonized(table: pd.DataFrame, panel: str) -> set[str]:
    return set(table.loc[panel, "harmonized"].dropna())


@pytest.fixture(scope="module")
def real():
    if not SHARED.is_dir():
        pytest.skip("shared data (../shared/data) not present")
    names = {label: list(ad.read_h5ad(SHARED / path, backed="r").var_names) for label, path in PANELS.items()}
    return names, cmn.pp.harmonize_proteins(names)


def test_real_panels_shared_proteins(real):
    names, table = real
    assert list(table.index) == [(label, n) for label, ns in names.items() for n in ns]
    assert (table["kind"] != "unknown").all()  # the map knows every antibody of the three panels
    bmmc, pbmc, dsb = (_harmonized(table, p) for p in PANELS)
    # pbmc's 14 proteins are all in bmmc but CD15 and CD8a (bmmc has CD8); dsb lacks TIGIT as well
    assert pbmc == {"CD3", "CD4", "CD8a", "CD14", "CD15", "CD16", "CD56", "CD19", "CD25", "CD45RA", "CD45RO"} | {
        "CD279",
        "TIGIT",
        "CD127",
    }
    assert bmmc & pbmc == pbmc - {"CD15", "CD8a"}
    assert len(bmmc & pbmc) == 12
    assert pbmc & dsb == pbmc - {"CD15", "CD8a", "TIGIT"}
    assert len(pbmc & dsb) == 11
    assert len(bmmc & dsb) == 63
    assert len(dsb) == 83


def test_real_panels_hand_checked_rows(real):
    _, table = real
    assert table.loc[("pbmc", "PD-1_TotalSeqB"), ["harmonized", "match"]].tolist() == ["CD279", "alias"]
    assert table.loc[("dsb", "CD279_PROT"), ["harmonized", "match"]].tolist() == ["CD279", "suffix"]
    assert table.loc[("dsb", "HLA-ABC_PROT"), ["harmonized", "match"]].tolist() == ["HLA-A-B-C", "alias"]
    assert table.loc[("bmmc", "HLA-A-B-C"), ["harmonized", "match"]].tolist() == ["HLA-A-B-C", "exact"]
    assert table.loc[("dsb", "CD278 _PROT"), "harmonized"] == "CD278"
    assert table.loc[("dsb", "BTLA_PROT"), "harmonized"] == "CD272"
    for row in [("bmmc", "CD45RA"), ("pbmc", "CD45RA_TotalSeqB"), ("dsb", "CD45RA_PROT")]:
        assert table.loc[row, "harmonized"] == "CD45RA"
        assert table.loc[row, "n_panels"] == 3
    assert table.loc[("dsb", "HLA-DR_PROT"), "n_panels"] == 2  # bmmc and dsb
    # CD8 (bmmc, dsb) and CD8a (pbmc) share CD8A but are not merged; each names the other
    assert table.loc[("pbmc", "CD8a_TotalSeqB"), ["harmonized", "n_panels", "related"]].tolist() == [
        "CD8a",
        1,
        ("CD8",),
    ]
    assert table.loc[("bmmc", "CD8"), ["harmonized", "n_panels", "related"]].tolist() == ["CD8", 2, ("CD8a",)]
    assert set(table.loc[("bmmc", "CD45"), "related"]) == {"CD45RA", "CD45RO"}


def test_real_panels_isotypes_stand_apart(real):
    _, table = real
    isotype = table["match"] == "isotype_control"
    assert isotype.groupby(level="panel").sum().to_dict() == {"bmmc": 0, "pbmc": 3, "dsb": 4}
    assert table.loc[isotype, "harmonized"].isna().all()
    assert (table.loc[isotype, "n_panels"] == 0).all()
    # surface immunoglobulins are proteins, not isotype controls
    assert table.loc[("dsb", "IgM_PROT"), "harmonized"] == "IgM"
    assert table.loc[("bmmc", "IgM"), "n_panels"] == 2


def test_real_panels_synonym_merges_cd8(real):
    names, _ = real
    table = cmn.pp.harmonize_proteins(names, synonyms={"CD8": "CD8a"})
    assert table.loc[("bmmc", "CD8"), ["harmonized", "match"]].tolist() == ["CD8a", "user"]
    assert table.loc[("pbmc", "CD8a_TotalSeqB"), "n_panels"] == 3
    assert len(_harmonized(table, "bmmc") & _harmonized(table, "pbmc")) == 13


def test_cd8a_and_cd8b_stay_apart():
    table = cmn.pp.harmonize_proteins({"a": ["CD8a", "CD8"], "b": ["CD8b", "CD8A_TotalSeqB"]})
    assert table.loc[("a", "CD8a"), "harmonized"] == "CD8a"
    assert table.loc[("b", "CD8A_TotalSeqB"), ["harmonized", "match", "n_panels"]].tolist() == ["CD8a", "suffix", 2]
    assert table.loc[("b", "CD8b"), ["harmonized", "kind", "n_panels"]].tolist() == ["CD8b", "unknown", 1]
    assert table.loc[("a", "CD8"), ["harmonized", "n_panels"]].tolist() == ["CD8", 1]


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("CD19", "CD19", "exact"),
        ("CD19", "cd19", "case"),
        ("CD19", "ADT_CD19_A0093", "suffix"),
        ("CD279", "PD-1", "alias"),
        ("HLA-A-B-C", "HLA-A,B,C", "alias"),
        ("CD71", "TFRC_TotalSeqB", "gene"),
        ("CD45", "PTPRC", "gene"),
        ("MyNewMarker", "mynewmarker_PROT", "suffix"),
    ],
)
def test_match_kinds(a, b, match):
    table = cmn.pp.harmonize_proteins({"one": [a], "two": [b]})
    assert table.loc[("two", b), "match"] == match
    assert table.loc[("two", b), "harmonized"] == table.loc[("one", a), "harmonized"]
    assert (table["n_panels"] == 2).all()


@pytest.mark.parametrize(
    ("a", "b"),
    [("CD8", "CD8a"), ("CD45RA", "CD45RO"), ("CD45", "CD45RA"), ("HLA-A-B-C", "HLA-A"), ("IgG1", "IgG1_control")],
)
def test_distinct_proteins_never_merge(a, b):
    table = cmn.pp.harmonize_proteins({"one": [a], "two": [b]})
    assert (table["n_panels"] <= 1).all()


def test_isotype_controls_match_nothing():
    table = cmn.pp.harmonize_proteins(
        {"one": ["IgG1_control_TotalSeqB", "CD3"], "two": ["MouseIgG1kappaisotype_PROT", "CD3_PROT"]}
    )
    assert table["match"].tolist() == ["isotype_control", "exact", "isotype_control", "suffix"]
    assert table["harmonized"].isna().tolist() == [True, False, True, False]


@pytest.mark.parametrize("names", [["CD4", "CD4_TotalSeqB"], ["PD-1", "CD279"], ["CD3", "CD3"]])
def test_two_names_of_one_panel_as_one_protein_raise(names):
    with pytest.raises(ValueError, match=r"panel 'p'.*" + "".join(f"(?=.*{n!r})" for n in names)):
        cmn.pp.harmonize_proteins({"p": names, "q": ["CD8"]})


def test_synonyms_that_join_two_names_of_one_panel_raise():
    with pytest.raises(ValueError, match=r"\['CD8', 'CD8a'\] → 'CD8a'"):
        cmn.pp.harmonize_proteins({"p": ["CD8", "CD8a"]}, synonyms={"CD8": "CD8a"})


def _panels():
    prot = ad.AnnData(np.ones((3, 3), dtype=np.float32))
    prot.var_names = ["CD3_TotalSeqB", "PD-1_TotalSeqB", "IgG1_control_TotalSeqB"]
    rna = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    rna.var_names = ["CD3E", "PDCD1"]
    mdata = md.MuData({"rna": rna, "prot": prot})
    other = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    other.var_names = ["CD3_PROT", "CD279_PROT"]
    return mdata, other


def test_inputs_untouched_unless_inplace():
    mdata, other = _panels()
    before = (mdata["prot"].var.copy(), mdata.var.copy(), other.var.copy())
    table = cmn.pp.harmonize_proteins({"m": mdata, "a": other})
    pd.testing.assert_frame_equal(mdata["prot"].var, before[0])
    pd.testing.assert_frame_equal(mdata.var, before[1])
    pd.testing.assert_frame_equal(other.var, before[2])
    assert table.loc["m", "harmonized"].tolist()[:2] == ["CD3", "CD279"]


def test_inplace_renames_and_keeps_names_as_given():
    mdata, other = _panels()
    assert cmn.pp.harmonize_proteins({"m": mdata, "a": other}, inplace=True) is not None
    assert list(mdata["prot"].var_names) == ["CD3", "CD279", "IgG1_control_TotalSeqB"]
    assert list(mdata["prot"].var["cmn_panel_name"]) == ["CD3_TotalSeqB", "PD-1_TotalSeqB", "IgG1_control_TotalSeqB"]
    assert "CD279" in mdata.var_names  # the MuData was updated
    assert list(other.var_names) == ["CD3", "CD279"]
    assert list(other.var["cmn_panel_name"]) == ["CD3_PROT", "CD279_PROT"]
    # a second call changes nothing and keeps the names as first given
    cmn.pp.harmonize_proteins({"m": mdata, "a": other}, inplace=True)
    assert list(other.var["cmn_panel_name"]) == ["CD3_PROT", "CD279_PROT"]


def test_inplace_refuses_names_only_and_clashes_without_renaming():
    mdata, other = _panels()
    with pytest.raises(TypeError, match=r"\['names'\] are names only"):
        cmn.pp.harmonize_proteins({"m": mdata, "names": ["CD3"]}, inplace=True)
    clash = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    clash.var_names = ["CD279", "PD-1"]
    with pytest.raises(ValueError, match="read as the same protein"):
        cmn.pp.harmonize_proteins({"m": mdata, "c": clash}, inplace=True)
    assert list(mdata["prot"].var_names)[0] == "CD3_TotalSeqB"
    assert "cmn_panel_name" not in mdata["prot"].var


def test_bad_panels():
    with pytest.raises(TypeError, match="non-empty mapping"):
        cmn.pp.harmonize_proteins({})
    with pytest.raises(TypeError, match="panel 'p' must be"):
        cmn.pp.harmonize_proteins({"p": "CD3"})
