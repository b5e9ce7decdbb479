from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

import crossmodalnet as cmn

# (plot, keyword arguments that select one panel)
PLOTS = [
    (cmn.pl.predicted_vs_observed, {"proteins": "prot_000"}),
    (cmn.pl.saliency_ranking, {"proteins": "prot_000", "n_genes": 5}),
    (cmn.pl.gene_rank, {"protein": "prot_000", "genes": ["gene_0000", "gene_0001"]}),
    (cmn.pl.time_embedding, {}),
    (cmn.pl.enrichment, {"protein": "prot_000"}),
]


@pytest.mark.parametrize(("plot", "kwargs"), PLOTS, ids=lambda x: getattr(x, "__name__", ""))
def test_plot_returns_figure(annotated, plot, kwargs):
    fig = plot(annotated, **kwargs, return_fig=True)
    assert isinstance(fig, Figure)


@pytest.mark.parametrize(("plot", "kwargs"), PLOTS, ids=lambda x: getattr(x, "__name__", ""))
def test_plot_into_ax_and_save(annotated, plot, kwargs, tmp_path):
    fig, ax = plt.subplots()
    assert plot(annotated, **kwargs, ax=ax) is None
    assert ax.has_data()
    path = tmp_path / "plot.pdf"
    assert plot(annotated, **kwargs, show=False, save=path) is None
    assert path.stat().st_size > 0


def test_multi_panel_plots(annotated):
    fig = cmn.pl.predicted_vs_observed(annotated, return_fig=True, ncols=3)
    assert len(fig.axes) == 8
    fig = cmn.pl.saliency_ranking(annotated, proteins=["prot_000", "prot_001", "prot_002"], return_fig=True)
    assert len(fig.axes) == 3
    fig = cmn.pl.enrichment(
        annotated,
        protein="prot_001",
        terms=list(annotated.uns["cmn_enrichment"]["running"]["prot_001"]["term"]),
        return_fig=True,
    )
    assert len(fig.axes) == 3
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="one panel"):
        cmn.pl.predicted_vs_observed(annotated, ax=ax)


def test_plots_name_the_missing_tool(norm_mdata):
    with pytest.raises(KeyError, match=r"cmn.tl.predict_protein"):
        cmn.pl.predicted_vs_observed(norm_mdata)
    with pytest.raises(KeyError, match=r"cmn.tl.saliency"):
        cmn.pl.saliency_ranking(norm_mdata)
    with pytest.raises(KeyError, match=r"cmn.tl.saliency"):
        cmn.pl.gene_rank(norm_mdata, protein="prot_000", genes="gene_0000")
    with pytest.raises(KeyError, match=r"cmn.tl.time_embedding"):
        cmn.pl.time_embedding(norm_mdata)
    with pytest.raises(KeyError, match=r"cmn.tl.enrichment"):
        cmn.pl.enrichment(norm_mdata, protein="prot_000")


def test_plot_argument_errors(annotated):
    with pytest.raises(KeyError, match="unknown protein"):
        cmn.pl.saliency_ranking(annotated, proteins="nope")
    with pytest.raises(KeyError, match="gene"):
        cmn.pl.gene_rank(annotated, protein="prot_000", genes="nope")
    with pytest.raises(KeyError, match="term"):
        cmn.pl.enrichment(annotated, protein="prot_000", terms="nope")
    with pytest.raises(ValueError, match="components"):
        cmn.pl.time_embedding(annotated, components=(0, 5))


def test_training_history(trained_model, tmp_path):
    fig = cmn.pl.training_history(trained_model, return_fig=True)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    _, ax = plt.subplots()
    assert cmn.pl.training_history(trained_model, panels="weights", ax=ax) is None
    assert len(ax.get_lines()) == 2
    with pytest.raises(ValueError, match="panels"):
        cmn.pl.training_history(trained_model, panels=["nope"])


def test_show_default(annotated, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    assert cmn.pl.time_embedding(annotated) is None
    assert shown == [True]
    _, ax = plt.subplots()
    cmn.pl.time_embedding(annotated, ax=ax)
    cmn.pl.time_embedding(annotated, show=False)
    cmn.pl.time_embedding(annotated, return_fig=True)
    assert shown == [True]


def _saliency_mdata(genes, table):
    import anndata as ad
    import mudata as md
    import numpy as np
    import pandas as pd

    rna = ad.AnnData(np.zeros((3, len(genes)), dtype=np.float32), var=pd.DataFrame(index=genes))
    rna.varm["cmn_saliency"] = pd.DataFrame(table, index=genes)
    mdata = md.MuData({"rna": rna})
    mdata.uns["cmn_saliency"] = {"protein_names": list(table)}
    return mdata


def test_gene_rank_marks_coding_genes():
    genes = ["ACTB", "CD3E", "Cd19", "CD3D", "GAPDH"]
    mdata = _saliency_mdata(
        genes,
        {"CD19_TotalSeqB": [0.9, 0.1, -0.5, 0.2, 0.7], "CD3": [0.1, 0.3, 0.2, -0.8, 0.05], "prot_x": [1, 2, 3, 4, 5]},
    )

    def labels(**kwargs):
        _, ax = plt.subplots()
        cmn.pl.gene_rank(mdata, ax=ax, **kwargs)
        return sorted(t.get_text() for t in ax.texts)

    # |score| ranking of CD19: ACTB 0.9, GAPDH 0.7, Cd19 0.5 → Cd19 is #3 (mouse-cased gene, case-insensitive match)
    assert labels(protein="CD19_TotalSeqB") == ["Cd19 (#3, coding)"]
    assert labels(protein="CD3") == ["CD3D (#1, coding)", "CD3E (#2, coding)"]
    assert labels(protein="CD3", genes="ACTB") == ["ACTB (#4)", "CD3D (#1, coding)", "CD3E (#2, coding)"]
    assert labels(protein="CD3", genes=["CD3E"], coding_genes=False) == ["CD3E (#2)"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert labels(protein="prot_x") == []  # unknown to the map: nothing marked, no warning


def test_predicted_vs_observed_titles_name_the_cells(annotated, trained_model):
    """Issue 14 item 3: the r in the title is the test-cell r, and the title says which cells it is on."""
    from crossmodalnet._metrics import pearson_per_protein

    meta = annotated.uns["cmn_protein"]["metrics"]
    fig = cmn.pl.predicted_vs_observed(annotated, proteins="prot_000", return_fig=True)
    title = fig.axes[0].get_title()
    assert title.endswith("test cells")
    r = meta["per_protein"]["pearson"][list(meta["per_protein"]["protein_names"]).index("prot_000")]
    assert f"r = {r:.2f}," in title
    assert fig.axes[0].collections[0].get_offsets().shape[0] == meta["n_cells"]

    fig = cmn.pl.predicted_vs_observed(annotated, proteins="prot_000", cells="all", return_fig=True)
    assert fig.axes[0].get_title().endswith("all cells (includes training cells)")
    assert fig.axes[0].collections[0].get_offsets().shape[0] == annotated.n_obs
    pred = annotated.obsm["cmn_protein"][["prot_000"]].to_numpy()
    r_all = pearson_per_protein(pred, annotated["prot"][:, "prot_000"].X)[0]
    assert f"r = {r_all:.2f}," in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="`cells` must be"):
        cmn.pl.predicted_vs_observed(annotated, cells="train")


def test_saliency_ranking_has_a_sign_legend(annotated):
    """Issue 14 item 12: the sign colours of the saliency bars are explained by a legend."""
    import matplotlib.colors as mcolors

    fig = cmn.pl.saliency_ranking(annotated, proteins=["prot_000", "prot_001"], colors=("red", "blue"), return_fig=True)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["positive", "negative"]
    assert legend.get_title().get_text() == "saliency sign"
    faces = [mcolors.to_hex(h.get_facecolor()) for h in legend.legend_handles]
    assert faces == [mcolors.to_hex("red"), mcolors.to_hex("blue")]
    assert fig.axes[1].get_legend() is None
