from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def with_saliency(mdata, trained_model):
    cmn.tl.saliency(mdata, trained_model)
    return mdata


def test_enrichment_writes(with_saliency, gene_sets, assert_unchanged):
    mdata = with_saliency
    protein = next(iter(mdata.uns["cmn_synthetic"]["driver_genes"]))
    before = mdata.copy()
    out = cmn.tl.enrichment(mdata, protein=protein, gene_sets=gene_sets, permutation_num=50, n_running=2, copy=True)
    assert_unchanged(before, mdata)
    rec = out.uns["cmn_enrichment"]
    table = pd.DataFrame(rec["results"][protein])
    assert list(table.columns) == [
        "term",
        "es",
        "nes",
        "pval",
        "fdr",
        "fwer_pval",
        "tag_fraction",
        "gene_fraction",
        "lead_genes",
    ]
    assert set(table["term"]) == set(gene_sets)
    assert (table["fdr"].diff().dropna() >= 0).all()  # sorted by FDR
    run = rec["running"][protein]
    n_genes = mdata["rna"].n_vars
    assert list(run["term"]) == list(table["term"][:2])
    assert run["res"].shape == (2, n_genes)
    assert run["hits"].shape == (2, n_genes)
    assert run["hits"].dtype == bool
    for k, term in enumerate(run["term"]):
        assert run["hits"][k].sum() == len(set(gene_sets[term]) & set(mdata["rna"].var_names))
    assert np.all(np.diff(run["ranked_scores"]) <= 0)
    assert rec["params"]["protein"].tolist() == [protein]
    assert rec["params"]["gene_sets"] == "dict of 5 sets"


def test_enrichment_is_reproducible_and_reads_gmt(with_saliency, gene_sets, tmp_path):
    mdata = with_saliency
    proteins = list(mdata["rna"].varm["cmn_saliency"].columns[:2])
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{name}\tna\t" + "\t".join(genes) + "\n" for name, genes in gene_sets.items()))
    a = cmn.tl.enrichment(mdata, protein=proteins, gene_sets=gene_sets, permutation_num=50, rng=3, copy=True)
    b = cmn.tl.enrichment(mdata, protein=proteins, gene_sets=gmt, permutation_num=50, rng=3, copy=True)
    for p in proteins:
        ta, tb = (
            pd.DataFrame(a.uns["cmn_enrichment"]["results"][p]),
            pd.DataFrame(b.uns["cmn_enrichment"]["results"][p]),
        )
        pd.testing.assert_frame_equal(ta, tb)
    assert b.uns["cmn_enrichment"]["params"]["gene_sets"] == str(gmt)


def test_enrichment_errors(mdata, with_saliency, gene_sets):
    protein = "prot_000"
    with pytest.raises(ValueError, match="not an existing file"):
        cmn.tl.enrichment(mdata, protein=protein, gene_sets="KEGG_2021_Human")
    with pytest.raises(ValueError, match="no gene set has between 5 and 500"):
        cmn.tl.enrichment(mdata, protein=protein, gene_sets={"a": ["CD38", "HAVCR2"]})
    with pytest.raises(KeyError, match="unknown protein"):
        cmn.tl.enrichment(mdata, protein="nope", gene_sets=gene_sets)
    assert "cmn_enrichment" not in mdata.uns
    fresh = mdata.copy()
    del fresh["rna"].varm["cmn_saliency"]
    with pytest.raises(KeyError, match=r"run `cmn.tl.saliency` first"):
        cmn.tl.enrichment(fresh, protein=protein, gene_sets=gene_sets)


@pytest.mark.skipif(not (SHARED / "bmmc_cite_600").is_dir(), reason="shared data (../shared/data) not present")
def test_enrichment_hallmark_on_bmmc_genes():
    """Smoke test with the shipped Hallmark GMT on real human gene symbols (bmmc_cite_600).

    The ranking is the genes' mean expression, standing in for a saliency table: this checks the GMT
    path on real symbols, not a biological result.
    """
    import anndata as ad

    rna = ad.read_h5ad(SHARED / "bmmc_cite_600" / "rna.h5ad")
    mdata = cmn.pp.to_mudata(rna)
    mean = np.asarray(rna.X.mean(axis=0)).ravel()
    rna.varm["cmn_saliency"] = pd.DataFrame({"CD38": mean}, index=rna.var_names)
    cmn.tl.enrichment(
        mdata,
        protein="CD38",
        gene_sets=SHARED / "genesets" / "h.all.v7.0.symbols.gmt",
        min_size=5,
        permutation_num=20,
    )
    table = pd.DataFrame(mdata.uns["cmn_enrichment"]["results"]["CD38"])
    assert len(table) > 0
    assert table["term"].str.startswith("HALLMARK_").all()


def _mouse_cased(mdata):
    """A copy whose RNA genes are spelled like mouse symbols (gene_0001 -> Gene_0001)."""
    out = mdata.copy()
    rna = out["rna"]
    table = rna.varm["cmn_saliency"].copy()
    names = [g.capitalize() for g in rna.var_names]
    rna.var_names = names
    table.index = names
    rna.varm["cmn_saliency"] = table
    return out


def test_enrichment_matches_mouse_genes_to_human_sets(with_saliency, gene_sets):
    proteins = list(with_saliency["rna"].varm["cmn_saliency"].columns[:2])
    kwargs = {"protein": proteins, "permutation_num": 50, "rng": 1, "copy": True}
    ref = cmn.tl.enrichment(with_saliency, gene_sets=gene_sets, **kwargs).uns["cmn_enrichment"]
    mouse = _mouse_cased(with_saliency)
    human = {k: [g.upper() for g in v] for k, v in gene_sets.items()}
    n_genes = len({g for v in gene_sets.values() for g in v})
    with pytest.warns(UserWarning, match=rf"0 gene\(s\) .* as written, {n_genes} after upper-casing") as rec:
        out = cmn.tl.enrichment(mouse, gene_sets=human, **kwargs).uns["cmn_enrichment"]
    assert sum("upper-cas" in str(w.message) for w in rec) == 1  # once, not once per protein
    assert out["symbol_match"] == "upper"
    assert out["params"]["symbol_match"] == "auto"
    assert ref["symbol_match"] == "exact"
    for p in proteins:
        a, b = pd.DataFrame(ref["results"][p]), pd.DataFrame(out["results"][p])
        pd.testing.assert_frame_equal(a.drop(columns="lead_genes"), b.drop(columns="lead_genes"))
        # lead genes come back as spelled in var_names
        assert list(b["lead_genes"]) == [";".join(g.capitalize() for g in s.split(";")) for s in a["lead_genes"]]
        assert any(b["lead_genes"].str.len() > 0)
        np.testing.assert_array_equal(ref["running"][p]["hits"], out["running"][p]["hits"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        explicit = cmn.tl.enrichment(mouse, gene_sets=human, symbol_match="upper", **kwargs).uns["cmn_enrichment"]
    assert explicit["symbol_match"] == "upper"
    with pytest.raises(ValueError, match="no gene set has between"):
        cmn.tl.enrichment(mouse, gene_sets=human, symbol_match="exact", **kwargs)
    with pytest.raises(ValueError, match="symbol_match"):
        cmn.tl.enrichment(mouse, gene_sets=human, symbol_match="lower", **kwargs)


def test_enrichment_human_genes_stay_exact(with_saliency, gene_sets):
    """Human data with a few case differences (e.g. C1orf genes) is not switched to upper-casing."""
    sets = {k: list(v) for k, v in gene_sets.items()}
    sets["random_0"] = [g.upper() for g in sets["random_0"]]  # 8 of 32 genes differ in case
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = cmn.tl.enrichment(with_saliency, protein="prot_000", gene_sets=sets, permutation_num=20, copy=True)
    assert out.uns["cmn_enrichment"]["symbol_match"] == "exact"


@pytest.mark.skipif(not (SHARED / "bmmc_cite_600").is_dir(), reason="shared data (../shared/data) not present")
def test_enrichment_hallmark_on_mouse_cased_genes():
    """bmmc_cite_600's genes spelled as mouse symbols against the human Hallmark GMT: overlap, one warning."""
    import anndata as ad

    rna = ad.read_h5ad(SHARED / "bmmc_cite_600" / "rna.h5ad")
    rna.var_names = [g.capitalize() for g in rna.var_names]
    mdata = cmn.pp.to_mudata(rna)
    mean = np.asarray(rna.X.mean(axis=0)).ravel()
    rna.varm["cmn_saliency"] = pd.DataFrame({"CD38": mean, "CD19": -mean}, index=rna.var_names)
    gmt = SHARED / "genesets" / "h.all.v7.0.symbols.gmt"
    with pytest.warns(UserWarning, match="upper-cas") as rec:
        cmn.tl.enrichment(mdata, protein=["CD38", "CD19"], gene_sets=gmt, permutation_num=20)
    assert sum("upper-cas" in str(w.message) for w in rec) == 1
    table = pd.DataFrame(mdata.uns["cmn_enrichment"]["results"]["CD38"])
    assert len(table) > 10
    lead = {g for s in table["lead_genes"] for g in s.split(";") if g}
    assert lead
    assert lead <= set(rna.var_names)


def test_enrichment_warns_when_most_of_the_ranking_is_tied(with_saliency, gene_sets):
    """Issue 26 item 4: a ranking that is mostly ties (zero saliency) warns with the share and the way out."""
    mdata = with_saliency
    protein = next(iter(mdata.uns["cmn_synthetic"]["driver_genes"]))
    scores = mdata["rna"].varm["cmn_saliency"].copy()
    n_genes = scores.shape[0]
    keep = scores[protein].abs().nlargest(6).index  # only a few genes keep a weight, as with the linear path alone
    scores.loc[~scores.index.isin(keep), protein] = 0.0
    mdata["rna"].varm["cmn_saliency"] = scores
    with pytest.warns(UserWarning, match="share one saliency value") as record:
        cmn.tl.enrichment(mdata, protein=protein, gene_sets=gene_sets, permutation_num=20)
    tie_warnings = [w for w in record if "share one saliency value" in str(w.message)]
    assert len(tie_warnings) == 1
    message = str(tie_warnings[0].message)
    share = (n_genes - 6) / n_genes
    assert f"{n_genes - 6} of {n_genes} genes ({share:.1%}) share one saliency value (0)" in message
    assert "linear_path_genes='all'" in message
    assert "input_reduction" in message
    assert tie_warnings[0].filename == __file__  # points at the caller
    assert mdata.uns["cmn_enrichment"]["tied_fraction"][protein] == pytest.approx(share)
    # gradient x input from a zero baseline: unexpressed genes score 0, and `method='gradient'` unties them
    mdata.uns["cmn_saliency"]["method"] = "gradient_x_input"
    with pytest.warns(UserWarning, match=r"`method='gradient'` or `'gradient_x_sd'` scores it by its gradient"):
        cmn.tl.enrichment(mdata, protein=protein, gene_sets=gene_sets, permutation_num=20)


def test_enrichment_of_a_full_ranking_does_not_warn_about_ties(with_saliency, gene_sets):
    mdata = with_saliency
    protein = next(iter(mdata.uns["cmn_synthetic"]["driver_genes"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cmn.tl.enrichment(mdata, protein=protein, gene_sets=gene_sets, permutation_num=20)
    assert mdata.uns["cmn_enrichment"]["tied_fraction"][protein] < 0.05
