from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossmodalnet.benchmark import coding_gene_rank


@pytest.fixture
def planted():
    """Scores for 10 genes × 4 proteins with the coding genes planted at known ranks."""
    genes = [f"g{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    base = rng.permutation(np.arange(1.0, 11.0))  # distinct magnitudes 1..10
    scores = pd.DataFrame({p: base * rng.choice([-1.0, 1.0], size=10) for p in ["A", "B", "C", "D"]}, index=genes)
    order = list(scores.index[np.argsort(-base)])  # order[k] has rank k + 1 in every column
    scores.loc[order[0], "A"] *= -1  # the sign must not matter
    mapping = {"A": [order[0]], "B": [order[6], order[3]], "C": ["not_measured", order[9]], "D": ["not_measured"]}
    return scores, mapping, order


def test_planted_ranks(planted):
    scores, mapping, order = planted
    out = coding_gene_rank(scores, mapping)
    assert list(out.index) == ["A", "B", "C"]  # D has no coding gene in the table
    assert list(out["rank"]) == [1.0, 4.0, 10.0]
    assert list(out["gene"]) == [order[0], order[3], order[9]]
    assert list(out["n_coding"]) == [1, 2, 1]
    assert (out["n_genes"] == 10).all()
    assert out["rank"].median() == 4.0
    # a Series mapping (the `genes` column of `cmn.pp.protein_genes`) gives the same answer
    pd.testing.assert_frame_equal(coding_gene_rank(scores, pd.Series(mapping)), out)


def test_ties_and_missing_scores(planted):
    scores, _, order = planted
    scores = scores.copy()
    scores["A"] = 0.0
    scores.loc[order[2], "A"] = 5.0
    scores.loc[order[5], "B"] = np.nan
    out = coding_gene_rank(scores, {"A": [order[0]], "B": [order[5]]})
    # nine genes tie at 0 below one gene: each gets the average rank (2 + 10) / 2
    assert out.loc["A", "rank"] == 6.0
    # a missing score ranks last, not dropped
    assert out.loc["B", "rank"] == 10.0


def test_default_mapping_uses_protein_genes():
    genes = ["PTPRC", "Cd19", "TFRC", "ACTB", "CD3D", "CD3E"]
    scores = pd.DataFrame(
        {
            "CD45RA_TotalSeqB": [0.1, 0.9, 0.2, 0.8, 0.3, 0.4],  # PTPRC ranks 6th
            "CD19": [0.5, 0.6, 0.1, 0.2, 0.3, 0.4],  # Cd19 (case-insensitive) ranks 1st
            "CD3": [0.1, 0.2, 0.3, 0.9, 0.5, 0.6],  # CD3E 2nd, CD3D 3rd: best is 2
            "TCR": [0.1] * 6,  # no coding gene
        },
        index=genes,
    )
    out = coding_gene_rank(scores)
    assert list(out.index) == ["CD45RA_TotalSeqB", "CD19", "CD3"]
    assert list(out["rank"]) == [6.0, 1.0, 2.0]
    assert list(out["gene"]) == ["PTPRC", "Cd19", "CD3E"]
    assert list(out["n_coding"]) == [1, 1, 2]


def test_errors(planted):
    scores, mapping, _ = planted
    with pytest.raises(TypeError, match="DataFrame"):
        coding_gene_rank(scores.to_numpy(), mapping)
    with pytest.raises(TypeError, match="mapping"):
        coding_gene_rank(scores, [("A", "g0")])
    dup = pd.concat([scores, scores.iloc[:1]])
    with pytest.raises(ValueError, match="duplicated"):
        coding_gene_rank(dup, mapping)
