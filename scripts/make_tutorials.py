"""Write the tutorial notebooks in ``tutorials/`` from the cell lists below and execute them in place.

Usage::

    python scripts/make_tutorials.py            # write and execute all notebooks (outputs are committed)
    python scripts/make_tutorials.py --no-exec  # write them only

Execution uses nbclient with the current interpreter's ``python3`` kernel; run from the repository root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

SETUP = """\
import logging
import warnings

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import scvi

import crossmodalnet as cmn

warnings.filterwarnings("ignore")  # keep the rendered notebook readable; library warnings are documented elsewhere
logging.getLogger("lightning").setLevel(logging.ERROR)
scvi.settings.seed = 0"""

GETTING_STARTED = [
    ("md", """# Getting started: predict surface proteins from RNA

**What you will learn**

- load the embedded CITE-seq data set (600 bone-marrow cells, 1,000 genes, 134 proteins);
- register RNA and protein modalities with `CrossmodalNet.setup_mudata` and train;
- write predictions into the MuData with `cmn.tl.predict_protein` and evaluate them per protein and per cell;
- rank the genes that drive a protein with saliency and test them for pathway enrichment.

The data set has no time points, so the donor (`obs['batch']`, s1d1/s1d2) plays the role of the time covariate.
With 600 cells, the numbers below are sanity checks, not benchmarks. Runs on 2 CPU cores in a few minutes."""),
    ("code", SETUP),
    ("code", """mdata = cmn.datasets.bmmc_cite()
mdata"""),
    ("md", """`rna.X` is log-normalised and `prot.X` is normalised ADT already (raw counts are in `layers['counts']`;
`cmn.pp.log_normalize` and `cmn.pp.clr` / `cmn.pp.dsb` produce these from raw counts)."""),
    ("code", """cmn.model.CrossmodalNet.setup_mudata(mdata, rna_key="rna", protein_key="prot", time_key="batch")
model = cmn.model.CrossmodalNet(mdata)
model.train(max_epochs=200, accelerator="cpu", enable_progress_bar=False)
model"""),
    ("code", """cmn.pl.training_history(model)"""),
    ("md", """`cmn.tl.predict_protein` writes a cells × proteins DataFrame to `mdata.obsm['cmn_protein']`. Because observed
protein exists for these cells, it also stores per-protein and per-cell Pearson/Spearman and MSE, computed on the
model's **test cells** only."""),
    ("code", """cmn.tl.predict_protein(mdata, model)
metrics = mdata.uns["cmn_protein"]["metrics"]
{k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)}"""),
    ("md", """Per-cell Pearson is always higher than per-protein Pearson: it rewards getting the *differences between
protein means* right, which even a constant per-protein mean does. Judge a model by per-protein Pearson."""),
    ("code", """test = mdata[mdata.obs_names[model.test_indices]].copy()
best = mdata.uns["cmn_protein"]["protein_names"]
r = metrics["per_protein"]["pearson"]
top = [best[i] for i in np.argsort(-np.nan_to_num(r, nan=-1))[:4]]
cmn.pl.predicted_vs_observed(test, proteins=top)"""),
    ("md", """## Which genes drive a protein?

Saliency (the paper's $\\gamma_j = \\sum_i \\partial \\hat y_i(j) / \\partial x_i$) ranks genes for each protein."""),
    ("code", """cmn.tl.saliency(mdata, model, proteins=["CD71", "CD19", "CD14"])
cmn.pl.saliency_ranking(mdata, proteins=["CD71", "CD19", "CD14"], n_genes=10)"""),
    ("code", """cmn.pl.gene_rank(mdata, protein="CD19", genes=["BANK1", "CD74", "LDHB"])"""),
    ("md", """## Pathway enrichment (GSEA prerank on the saliency ranking)

Gene sets are read offline from a GMT file: here MSigDB Hallmark from the development data folder
`../shared/data/genesets/` beside the repository (a `dict` of gene lists works the same way)."""),
    ("code", """from pathlib import Path

gmt = Path("../../shared/data/genesets/h.all.v7.0.symbols.gmt")
if not gmt.exists():
    gmt = Path("../shared/data/genesets/h.all.v7.0.symbols.gmt")
cmn.tl.enrichment(mdata, protein="CD71", gene_sets=str(gmt), min_size=5, permutation_num=200)
import pandas as pd

pd.DataFrame(mdata.uns["cmn_enrichment"]["results"]["CD71"])[["term", "nes", "fdr"]].head(5)"""),
    ("code", """cmn.pl.enrichment(mdata, protein="CD71")"""),
]

TIME_RESOLVED = [
    ("md", """# Time-resolved interpretation on a generated time course

**What you will learn**

- train on time-resolved CITE-seq and look at the learned time embedding;
- hold out a whole time point and predict it by interpolating time embeddings;
- predict every cell at another time point (counterfactual time);
- check that saliency recovers the genes that truly drive each protein, and run GSEA.

No real time-resolved CITE-seq can be downloaded here, so this tutorial uses `cmn.datasets.synthetic_cite`, a
generator with planted truth: each protein is driven by known genes, and time shifts protein levels smoothly."""),
    ("code", SETUP),
    ("code", """mdata = cmn.datasets.synthetic_cite(n_obs=1500, n_genes=400, n_proteins=16, n_time_points=3, rng=0)
cmn.pp.log_normalize(mdata)  # RNA: scanpy normalize_total + log1p (counts kept in layers['counts'])
cmn.pp.clr(mdata)  # proteins: muon CLR across proteins within each cell
truth = mdata.uns["cmn_synthetic"]
mdata.obs["time"].value_counts().sort_index()"""),
    ("md", """## Hold out the middle time point

All cells of day 3 are the test set; the model never sees day 3. Its embedding is the linear interpolation of the
day-2 and day-4 embeddings."""),
    ("code", """cmn.model.CrossmodalNet.setup_mudata(mdata, time_key="time")
model = cmn.model.CrossmodalNet(mdata, n_latent=128)
model.train(max_epochs=200, split="holdout_time", holdout_time=3, accelerator="cpu", enable_progress_bar=False)
cmn.tl.predict_protein(mdata, model)
{k: round(v, 3) for k, v in mdata.uns["cmn_protein"]["metrics"].items() if isinstance(v, float)}"""),
    ("code", """cmn.tl.time_embedding(mdata, model, interpolate=[2.5, 3.0, 3.5])
cmn.pl.time_embedding(mdata)"""),
    ("md", """## Counterfactual time

`time=` predicts every cell as if it had been measured at another time point; the basal state `z` is the same."""),
    ("code", """p2 = model.predict_protein(time=2)
p4 = model.predict_protein(time=4)
shift = (p4 - p2).mean()
planted = truth["time_effects"][2] - truth["time_effects"][0]
print("correlation of predicted and planted day-4 minus day-2 shift:",
      round(np.corrcoef(shift.to_numpy(), planted[: len(shift)])[0, 1], 3))"""),
    ("md", """## Saliency recovers the planted driver genes"""),
    ("code", """from sklearn.metrics import roc_auc_score

cmn.tl.saliency(mdata, model)
scores = mdata["rna"].varm["cmn_saliency"]
auroc = {p: roc_auc_score(scores.index.isin(truth["driver_genes"][p]), scores[p].abs()) for p in scores.columns}
print("mean driver-gene AUROC:", round(float(np.mean(list(auroc.values()))), 3))"""),
    ("code", """protein = scores.columns[0]
print(protein, "planted drivers:", [str(g) for g in truth["driver_genes"][protein]])
cmn.pl.saliency_ranking(mdata, proteins=protein, n_genes=10)"""),
    ("md", """## GSEA on the saliency ranking

Gene sets can be a GMT file or a dict. Here: each protein's planted drivers as one set, plus random decoy sets of
the same size. Drivers can act with either sign, so we rank genes by saliency *magnitude* (`aggregate="abs_sum"`,
stored under its own key) before running GSEA prerank."""),
    ("code", """cmn.tl.saliency(mdata, model, proteins=protein, aggregate="abs_sum", key_added="cmn_saliency_abs")
rng = np.random.default_rng(0)
genes = mdata["rna"].var_names
sets = {f"drivers_{p}": [str(g) for g in truth["driver_genes"][p]] for p in scores.columns}
sets.update({f"random_{i}": list(rng.choice(genes, 3, replace=False)) for i in range(30)})
cmn.tl.enrichment(
    mdata, protein=protein, gene_sets=sets, saliency_key="cmn_saliency_abs", min_size=3, permutation_num=200
)
import pandas as pd

pd.DataFrame(mdata.uns["cmn_enrichment"]["results"][protein])[["term", "nes", "fdr"]].head(5)"""),
    ("code", """cmn.pl.enrichment(mdata, protein=protein)"""),
]

RNA_ONLY = [
    ("md", """# Imputing proteins into an RNA-only data set

**What you will learn**

- apply a trained model to RNA-only data whose genes are named differently (Ensembl IDs), in another order, and
  partly missing;
- read the gene-coverage report;
- compute the basal embedding, run UMAP on it and colour it by imputed proteins;
- check with `cmn.tl.covariate_probe` that the basal embedding does not carry the donor beyond what the cell
  types tell.

The reference is the embedded BMMC CITE-seq set; the "atlas" is built from its RNA with the genes renamed to
Ensembl IDs, shuffled and 20% dropped, so we can check the imputation against the measured proteins."""),
    ("code", SETUP),
    ("code", """ref = cmn.datasets.bmmc_cite()
cmn.model.CrossmodalNet.setup_mudata(ref, time_key="batch")
model = cmn.model.CrossmodalNet(ref)
model.train(max_epochs=200, accelerator="cpu", enable_progress_bar=False)"""),
    ("code", """rng = np.random.default_rng(0)
rna = ref["rna"].copy()
keep = rng.permutation(rna.n_vars)[: int(0.8 * rna.n_vars)]
atlas_rna = rna[:, keep].copy()
atlas_rna.var_names = atlas_rna.var["gene_ids"].to_numpy()  # Ensembl IDs instead of symbols
atlas = cmn.pp.to_mudata(atlas_rna)
atlas.obs["batch"] = ref.obs["batch"].to_numpy()
atlas"""),
    ("md", """`cmn.tl.predict_protein` matches the atlas genes to the model's by Ensembl ID (`gene_id_column="gene_ids"`
looks the IDs up in the reference's `var['gene_ids']`), fills the missing 20% with zeros (not expressed) with a
warning, and records the coverage."""),
    ("code", """atlas.mod["rna"].var["gene_ids"] = atlas.mod["rna"].var_names
cmn.tl.predict_protein(atlas, model, gene_id_column="gene_ids")
atlas.uns["cmn_protein"]["coverage"]"""),
    ("code", """imputed = atlas.obsm["cmn_protein"]
observed = ref["prot"].to_df()
r = [np.corrcoef(imputed[p], observed[p])[0, 1] for p in ["CD19", "CD14", "CD3", "CD71"]]
dict(zip(["CD19", "CD14", "CD3", "CD71"], np.round(r, 3)))"""),
    ("code", """cmn.tl.basal_embedding(atlas, model, gene_id_column="gene_ids")
sc.pp.neighbors(atlas, use_rep="X_cmn_basal")
sc.tl.umap(atlas)
for p in ["CD19", "CD14", "CD3", "CD71"]:
    atlas.obs[f"imputed_{p}"] = imputed[p].to_numpy()
atlas.obs["cell_type"] = ref.obs["cell_type"].to_numpy()
sc.pl.umap(atlas, color=["imputed_CD19", "imputed_CD14", "imputed_CD3", "imputed_CD71"], ncols=2, show=False)
plt.show()"""),
    ("md", """## Does the basal embedding carry the donor?

The model registered the donor as its covariate, and its disentangling phase removes the donor from the basal
state within cell-state clusters. `cmn.tl.covariate_probe` checks this: a 5-fold logistic regression reads the
donor from an embedding, scored by balanced accuracy (chance 0.5 for two donors). Probe the cells the model did
not train on, and compare with PCA of the same RNA and with the cell-type labels alone. The donors differ in
their cell-type mix, so the cell types alone tell the donors apart somewhat: that is the floor for a basal state
that keeps the cell types (docs page *Interpretability*)."""),
    ("code", """import pandas as pd

test = atlas[~atlas.obs_names.isin(model.training_cells)].copy()
sc.pp.pca(test["rna"], n_comps=50)
test.obsm["X_pca"] = test["rna"].obsm["X_pca"]
test.obsm["cell_type"] = pd.get_dummies(test.obs["cell_type"]).to_numpy(float)
cmn.tl.covariate_probe(test, key="batch")  # the basal embedding, obsm["X_cmn_basal"]
cmn.tl.covariate_probe(test, key="batch", obsm_key="X_pca", key_added="probe_pca")
cmn.tl.covariate_probe(test, key="batch", obsm_key="cell_type", key_added="probe_cell_types")
{k: round(test.uns[k]["balanced_accuracy"], 3) for k in ["cmn_probe_batch", "probe_pca", "probe_cell_types"]}"""),
    ("md", """Read the basal score against the other two: near the cell-type score, the basal state keeps the cell types
and little else of the donor; near PCA's, the donor was not removed. With 90 test cells these numbers
move by a few hundredths between splits."""),
]

UNCERTAINTY = [
    ("md", """# How much to trust each predicted value: calibrated uncertainty

**What you will learn**

- predict proteins with a spread and a 90% interval for every value (`cmn.tl.predict_protein(..., uncertainty=True)`);
- check the calibration on held-out cells with `cmn.pl.calibration`;
- see the intervals widen for a query that lacks half of the model's genes, and for cells of a time point the
  model never saw.

The spread combines MC dropout with the training residuals of each cell's neighbours in the basal latent; the
interval multiplier is fitted on the validation cells (split conformal), so it holds on new cells like them.
The embedded BMMC set has 600 cells: the numbers below are sanity checks, not benchmarks (see the docs page
*Uncertainty* for means over seeds on every data set). Runs on 2 CPU cores in a few minutes."""),
    ("code", SETUP),
    ("code", """mdata = cmn.datasets.bmmc_cite()
cmn.model.CrossmodalNet.setup_mudata(mdata, time_key="batch")
model = cmn.model.CrossmodalNet(mdata)
model.train(max_epochs=200, validation_size=0.1, accelerator="cpu", enable_progress_bar=False)
model.split_"""),
    ("md", """On the model's own training data, `predict_protein` scores only the test cells. With `uncertainty=True` it also
writes the spread (`obsm['cmn_protein_std']`) and the interval bounds (`_lower`, `_upper`); the first call
calibrates the model on its validation cells and stores the calibration with it (`model.uncertainty_`, saved by
`model.save`)."""),
    ("code", """cmn.tl.predict_protein(mdata, model, uncertainty=True)
record = mdata.uns["cmn_protein"]["uncertainty"]
print(f"{record['level']:.0%} intervals cover {record['coverage']:.1%} of the test values "
      f"({record['n_calibration_cells']} calibration cells, {record['calibration']} multiplier)")
print(f"mean Spearman(spread, |error|) over proteins: {np.nanmean(record['spearman']):.2f}, "
      f"positive for {np.mean(record['spearman'][np.isfinite(record['spearman'])] > 0):.0%} of proteins")
mdata.obsm["cmn_protein_std"].iloc[:3, :5]"""),
    ("code", """cmn.pl.calibration(mdata)"""),
    ("md", """## A query with half of the genes missing

The model's genes that the query lacks are filled with zeros. With `uncertainty=True`, they are also drawn many
times from the training cells' values (multiple imputation), and the spread of the predictions across the draws is
added; then the validation cells, with the same genes removed, recalibrate the multiplier. The intervals widen by
as much as the errors grow."""),
    ("code", """import mudata as md

test = mdata[np.sort(model.test_indices)].copy()
rng = np.random.default_rng(0)
keep = np.sort(rng.permutation(test["rna"].n_vars)[: test["rna"].n_vars // 2])
full = md.MuData({"rna": test["rna"].copy(), "prot": test["prot"].copy()})
half = md.MuData({"rna": test["rna"][:, keep].copy(), "prot": test["prot"].copy()})
for q in (full, half):
    q.obs["batch"] = test.obs["batch"].to_numpy()
    cmn.tl.predict_protein(q, model, uncertainty=True, min_coverage=0.4)
    u = q.uns["cmn_protein"]["uncertainty"]
    width = (q.obsm["cmn_protein_upper"] - q.obsm["cmn_protein_lower"]).to_numpy().mean()
    print(f"coverage of genes {q.uns['cmn_protein']['coverage']:.0%}: interval width {width:.2f}, "
          f"observed coverage {u['coverage']:.1%}")"""),
    ("md", """## Cells of a time point the model never saw

On generated data with three days, day 3 is held out; its cells are predicted from the interpolated time
embedding, and the spread of the predictions at the neighbouring days 2 and 4 is added."""),
    ("code", """syn = cmn.datasets.synthetic_cite(n_obs=600, n_genes=500, n_proteins=20, n_time_points=3, rng=0)
cmn.pp.log_normalize(syn)
cmn.pp.clr(syn)
cmn.model.CrossmodalNet.setup_mudata(syn, time_key="time")
tmodel = cmn.model.CrossmodalNet(syn, n_latent=128)
tmodel.train(max_epochs=200, split="holdout_time", holdout_time=3, accelerator="cpu", enable_progress_bar=False)
held_out = syn[np.sort(tmodel.test_indices)].copy()
interpolated = tmodel.predict_protein(held_out, return_uncertainty=True)
as_day_2 = tmodel.predict_protein(held_out, time=2, return_uncertainty=True)
y = np.asarray(held_out["prot"].X)
inside = (y >= interpolated.lower.to_numpy()) & (y <= interpolated.upper.to_numpy())
print(f"held-out day 3: coverage {inside.mean():.1%}; spread / spread at a trained day: "
      f"{np.median(interpolated.std.to_numpy() / as_day_2.std.to_numpy()):.2f} (median)")"""),
]


NOTEBOOKS = {
    "getting_started.ipynb": GETTING_STARTED,
    "time_resolved_interpretation.ipynb": TIME_RESOLVED,
    "rna_only_imputation.ipynb": RNA_ONLY,
    "uncertainty.ipynb": UNCERTAINTY,
}


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """Assemble a notebook from (kind, source) pairs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) if k == "md" else nbformat.v4.new_code_cell(s) for k, s in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(path: Path, *, timeout: int = 900) -> None:
    """Execute a notebook in place (cwd = its folder), raising on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    # tqdm warns at import that ipywidgets is missing, naming the builder's site-packages: not for readers
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and "TqdmWarning" in o.text)]
    nbformat.write(nb, path)


def main() -> None:
    """Write (and by default execute) every tutorial."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-exec", action="store_true")
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    args = parser.parse_args()
    for name, cells in NOTEBOOKS.items():
        if args.names and name not in args.names:
            continue
        path = TUTORIALS / name
        nbformat.write(build(name, cells), path)
        if not args.no_exec:
            execute(path)
        print("wrote", path)


if __name__ == "__main__":
    main()
