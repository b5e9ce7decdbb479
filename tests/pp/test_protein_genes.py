from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import crossmodalnet as cmn
from crossmodalnet.pp._protein_genes import KINDS, _table

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# var_names of pbmc1k_protein_v3/adt.h5ad (10x PBMC 1k, TotalSeq-B), as shipped.
PBMC_NAMES = [
    "CD3_TotalSeqB", "CD4_TotalSeqB", "CD8a_TotalSeqB", "CD14_TotalSeqB", "CD15_TotalSeqB", "CD16_TotalSeqB",
    "CD56_TotalSeqB", "CD19_TotalSeqB", "CD25_TotalSeqB", "CD45RA_TotalSeqB", "CD45RO_TotalSeqB", "PD-1_TotalSeqB",
    "TIGIT_TotalSeqB", "CD127_TotalSeqB", "IgG2a_control_TotalSeqB", "IgG1_control_TotalSeqB",
    "IgG2b_control_TotalSeqB",
]  # fmt: skip
CODING_KINDS = {"gene", "isoform", "complex", "paralogs"}
# HGNC symbols of protein-coding genes: upper-case letters, digits and hyphens.
SYMBOL = re.compile(r"^[A-Z][A-Z0-9-]*[A-Z0-9]$")


def _genes(name, **kwargs):
    return cmn.pp.protein_genes([name], **kwargs)["genes"].iloc[0]


def test_map_is_consistent():
    table = cmn.pp.protein_genes()
    assert table.index.is_unique
    assert set(table["kind"]) <= set(KINDS)
    has_genes = table["genes"].map(len) > 0
    assert (has_genes == table["kind"].isin(CODING_KINDS)).all()
    for genes in table["genes"]:
        assert all(SYMBOL.match(g) for g in genes), genes
        assert len(set(genes)) == len(genes)
    assert table.loc[table["kind"] == "complex", "genes"].map(len).min() >= 2
    assert table.loc[table["kind"] == "paralogs", "genes"].map(len).min() >= 2
    _, strict, loose = _table()  # every name and alias resolves to exactly one entry
    assert set(strict.values()) == set(loose.values()) == set(table.index)


def test_every_bmmc_protein_has_an_entry():
    mdata = cmn.datasets.bmmc_cite()
    names = mdata["prot"].var_names
    out = cmn.pp.protein_genes(names, errors="raise")
    assert list(out.index) == list(names)
    assert out["protein"].notna().all()
    assert len(out) == 134
    no_gene = set(out.index[out["genes"].map(len) == 0])
    assert no_gene == {"TCR", "TCRVa7.2", "TCRVd2", "CD57"}
    assert set(out.loc[["TCR", "TCRVa7.2", "TCRVd2"], "kind"]) == {"tcr"}
    assert out.loc["CD57", "kind"] == "carbohydrate"
    # matched against the data's 1,000 genes: the coding genes that are measured, spelled as in the data
    in_rna = cmn.pp.protein_genes(names, genes=mdata["rna"].var_names)
    found = {g for genes in in_rna["genes"] for g in genes}
    assert found <= set(mdata["rna"].var_names)
    assert in_rna.loc["CD69", "genes"] == ("CD69",)
    assert in_rna.loc["HLA-DR", "genes"] == ("HLA-DRA",)
    assert in_rna.loc["CD19", "genes"] == ()  # CD19 is not among the 1,000 genes


def test_pbmc_names_resolve_with_suffixes():
    out = cmn.pp.protein_genes(PBMC_NAMES, errors="raise")
    isotype = out["kind"] == "isotype_control"
    assert list(out.index[isotype]) == PBMC_NAMES[-3:]
    assert out.loc[~isotype, "protein"].notna().all()
    assert (~isotype).sum() == 14
    assert out.loc["CD15_TotalSeqB", "kind"] == "carbohydrate"
    with_genes = out.loc[~isotype & (out["kind"] != "carbohydrate"), "genes"]
    assert (with_genes.map(len) > 0).all()
    assert len(with_genes) == 13
    assert out.loc["CD8a_TotalSeqB", "genes"] == ("CD8A",)
    assert out.loc["PD-1_TotalSeqB", "genes"] == ("PDCD1",)


@pytest.mark.parametrize(
    ("name", "genes"),
    [
        ("CD71", ("TFRC",)),
        ("CD3", ("CD3E", "CD3D", "CD3G")),
        ("CD45RA", ("PTPRC",)),
        ("CD45RO", ("PTPRC",)),
        ("CD45", ("PTPRC",)),
        ("CD8", ("CD8A", "CD8B")),
        ("CD16", ("FCGR3A", "FCGR3B")),
        ("CD11b", ("ITGAM",)),
        ("CD56", ("NCAM1",)),
        ("CD20", ("MS4A1",)),
        ("CD279", ("PDCD1",)),
        ("CD154", ("CD40LG",)),
        ("CD224", ("GGT1",)),
        ("CD158e1", ("KIR3DL1",)),
        ("IgM", ("IGHM",)),
        ("HLA-A-B-C", ("HLA-A", "HLA-B", "HLA-C")),
    ],
)
def test_hand_checked_entries(name, genes):
    assert _genes(name) == genes


def test_hla_dr_lists_the_dimer():
    genes = _genes("HLA-DR")
    assert genes[:2] == ("HLA-DRA", "HLA-DRB1")
    assert set(genes) == {"HLA-DRA", "HLA-DRB1", "HLA-DRB3", "HLA-DRB4", "HLA-DRB5"}


@pytest.mark.parametrize(
    ("name", "protein"),
    [
        ("cd19", "CD19"),
        ("CD19_TotalSeqB", "CD19"),
        ("CD19-TotalSeq-A", "CD19"),
        ("CD278 _PROT", "CD278"),
        ("CD4-1", "CD4"),  # a unique-making suffix, not CD41
        ("CD4.1", "CD4"),
        ("CD41", "CD41"),
        ("PD-1", "CD279"),
        ("PD1", "CD279"),
        ("HLA-ABC_PROT", "HLA-A-B-C"),
        ("HLA.DR", "HLA-DR"),
        ("LOX-1", "LOX-1"),
        ("TCRVa7.2", "TCRVa7.2"),
    ],
)
def test_name_variants(name, protein):
    assert cmn.pp.protein_genes([name], errors="raise").loc[name, "protein"] == protein


def test_panel_prefix_and_barcode_suffix():
    """Issue 26 item 2: mouse TotalSeq panels name antibodies `ADT_CD19_A0093` (prefix, barcode ID)."""
    names = ["ADT_CD19_A0093", "ADT_CD4_A0001", "CD8a_B0046", "ADT_CD45RA_C0063", "prot_CD3", "ADT_IgG2a_A0091"]
    out = cmn.pp.protein_genes(names, species="mouse", errors="raise")
    assert list(out["protein"][:5]) == ["CD19", "CD4", "CD8a", "CD45RA", "CD3"]
    assert out.loc["ADT_CD19_A0093", "genes"] == ("Cd19",)
    assert out.loc["ADT_IgG2a_A0091", "kind"] == "isotype_control"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data (../shared/data) not present")
@pytest.mark.parametrize("panel", ["pbmc1k_protein_v3/adt.h5ad", "bmmc_cite_600/adt.h5ad", "dsb_tsang_87ab/cells.h5ad"])
def test_real_panels_with_prefix_and_barcode_map_like_the_bare_names(panel):
    """Every antibody of the real panels maps the same with an `ADT_` prefix and a `_A0093` barcode suffix."""
    import anndata as ad

    names = list(ad.read_h5ad(SHARED / panel, backed="r").var_names)
    bare = cmn.pp.protein_genes(names, errors="raise")
    decorated = cmn.pp.protein_genes([f"ADT_{n}_A0093" for n in names], errors="raise")
    assert list(decorated["protein"]) == list(bare["protein"])
    assert list(decorated["kind"]) == list(bare["kind"])


def test_isotype_controls_are_marked():
    names = ["IgG1", "Mouse IgG2bkIsotype_PROT", "RatIgG2bkIsotype_PROT", "Rat_IgG2a_kappa_isotype", "IgM", "IgD"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cmn.pp.protein_genes(names)
    assert list(out["kind"]) == ["isotype_control"] * 4 + ["gene", "gene"]
    assert list(out["genes"]) == [(), (), (), (), ("IGHM",), ("IGHD",)]


def test_mouse_symbols():
    assert _genes("CD19", species="mouse") == ("Cd19",)
    assert _genes("CD3", species="mouse") == ("Cd3e", "Cd3d", "Cd3g")
    # against mouse gene names: matched case-insensitively, spelled as in the data, absent ones dropped
    rna = ["Cd19", "Cd8a", "Cd8b1", "Ptprc", "H2-Ea"]
    out = cmn.pp.protein_genes(["CD19", "CD8", "CD45RA", "HLA-DR"], species="mouse", genes=rna)
    assert list(out["genes"]) == [("Cd19",), ("Cd8a",), ("Ptprc",), ()]
    human = cmn.pp.protein_genes(["CD19"], genes=["cd19", "CD20"])
    assert human.loc["CD19", "genes"] == ("cd19",)


def test_unknown_names():
    with pytest.warns(UserWarning, match=r"2 name\(s\) not in the protein-to-gene map: \['foo', 'Ly-6C'\]") as rec:
        out = cmn.pp.protein_genes(["CD19", "foo", "Ly-6C"])
    assert len(rec) == 1
    assert list(out["kind"]) == ["gene", "unknown", "unknown"]
    assert out.loc["foo", "genes"] == ()
    assert pd.isna(out.loc["foo", "protein"])  # None on pandas 2, NaN in pandas 3's str dtype
    with pytest.raises(KeyError, match="foo"):
        cmn.pp.protein_genes(["CD19", "foo"], errors="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmn.pp.protein_genes(["foo"], errors="ignore")


def test_argument_errors():
    with pytest.raises(ValueError, match="species"):
        cmn.pp.protein_genes(["CD19"], species="rat")
    with pytest.raises(ValueError, match="errors"):
        cmn.pp.protein_genes(["CD19"], errors="skip")
    with pytest.raises(TypeError, match="genes"):
        cmn.pp.protein_genes(["CD19"], genes="CD19")
    assert cmn.pp.protein_genes("CD19")["genes"].tolist() == [("CD19",)]


@pytest.mark.skipif(not (SHARED / "genesets").is_dir(), reason="shared data (../shared/data) not present")
def test_symbols_are_known_human_genes():
    """Every symbol of the map is a gene of the shipped GO/Reactome/Hallmark GMTs (HGNC symbols, 2022)."""
    universe = set()
    for path in (SHARED / "genesets").glob("*.gmt"):
        for line in path.read_text().splitlines():
            universe.update(line.split("\t")[2:])
    assert len(universe) > 15_000
    symbols = {g for genes in cmn.pp.protein_genes()["genes"] for g in genes}
    assert not symbols - universe
    assert len(symbols) > 140


@pytest.mark.skipif(not (SHARED / "pbmc1k_protein_v3").is_dir(), reason="shared data (../shared/data) not present")
def test_pbmc_names_match_the_data():
    import anndata as ad

    adt = ad.read_h5ad(SHARED / "pbmc1k_protein_v3" / "adt.h5ad")
    assert list(adt.var_names) == PBMC_NAMES
    assert isinstance(cmn.pp.protein_genes(adt.var_names), pd.DataFrame)
