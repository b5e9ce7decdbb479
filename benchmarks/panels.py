"""Several references, several antibody panels (issue 28, item 6): what a model learns from a union of panels.

Three experiments, each seed one row per method in ``benchmarks/results/panels.csv``:

``union``
    BMMC (134 ADTs) and PBMC 1k (14 ADTs) joined into one MuData: genes matched by Ensembl ID, protein names
    matched with :func:`crossmodalnet.pp.harmonize_proteins`, RNA log-normalised and proteins CLR-normalised
    (per cell) within each reference *before* joining, proteins outer-joined so that a protein a reference lacks
    is NaN, ``obs["reference"]`` the batch key. PBMC cells are split into training and test cells (seeded). Half
    of the proteins the two panels share (a fixed seeded choice, the same for every seed) are hidden (NaN) in the
    PBMC training cells; the union model (BMMC + PBMC training cells) predicts them on the PBMC test cells with
    ``predict_protein``'s rule (``union``: a protein a cell's batch did not measure is decoded with the average
    embedding of the batches that measured it, here BMMC's), with PBMC's own batch embedding for every protein
    (``union_own_embedding``, ``batch="pbmc"``: that embedding never saw the hidden proteins) and decoded as BMMC
    (``union_as_bmmc``, ``batch="bmmc"``; for the hidden proteins the same prediction as ``union``).
    Compared with a model trained on BMMC alone, RidgeCV trained on BMMC, and a PBMC-only model: trained on the
    PBMC training cells as they are, it never saw the hidden proteins and cannot predict them (a row says so);
    trained with them visible (``pbmc_only_oracle``) it is an upper bound that the union setting does not have.
``masked_planted``
    Generated data with two batches (:func:`crossmodalnet.datasets.synthetic_cite`): one protein is NaN in every
    cell of the second batch; the model, trained on all cells, predicts it there (``masked_model``: the rule, which
    decodes it with the first batch's embedding; ``masked_model_own_embedding``: ``batch=`` the second batch's own
    embedding, never trained on it). Scored against the hidden
    observed values (the generator stores no noiseless per-cell protein, so there is no "truth" column), with the
    coverage of the model's prediction intervals; ``masked_model_as_measuring_batch`` decodes those cells with the
    first batch's embedding (``batch=``; the same prediction of the masked protein as ``masked_model``). RidgeCV
    trained on the first batch is the naive baseline.
``query``
    BMMC donor s1d2 held out; models trained on donor s1d1. The query donor "measured" 10 proteins (the 10 most
    variable in the reference, so the choice does not look at the query); the other 124 are predicted and scored.
    The mapped query model (:meth:`~crossmodalnet.model.CrossmodalNet.map_query`: a new batch embedding learned
    from the 10 proteins, ``embedding_space="span"``, and ``mapped_query_free`` with ``"free"``) against the
    average-embedding rule (plain ``predict_protein`` on the unseen donor), RidgeCV on RNA, and RidgeCV on RNA plus
    the 10 proteins. The mapped rows record ``query_``'s held-out MSE (mapped vs average embedding, over the
    measured values of the cells ``map_query`` held out) and its calibration coverage before / after; their
    ``coverage`` is that of the mapped model's ``LEVEL`` intervals on the 124 unmeasured proteins (which
    ``map_query`` cannot check).

Numbers from 600-cell sets are sanity checks, not paper-comparable benchmarks. Command::

    PYTHONPATH=src python benchmarks/panels.py --preset default --seeds 0,1,2 --data-dir ../shared/data \
        --experiments union,masked_planted,query --out benchmarks/results/panels.csv

Rows of a run replace the rows of ``--out`` with the same experiment, method, preset and seed; others are kept.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("panels")

EXPERIMENTS = ("union", "masked_planted", "query")

# The preset the script runs by default (the default preset's linear path is NaN-aware since issue 28).
DEFAULT_PRESET = "default"

N_QUERY_MEASURED = 10
"""Proteins the held-out BMMC donor measured in the query experiment (the most variable in the reference)."""

RIDGE_ALPHAS = np.logspace(-2, 5, 15)
LEVEL = 0.9
"""Nominal coverage of the prediction intervals scored in the masked-protein experiment."""


# --------------------------------------------------------------------------------------------- provenance


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _machine() -> str:
    import torch

    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores (shared), {torch.get_num_threads()} torch thread(s); "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------------------------- scoring


def _score(pred: np.ndarray, true: np.ndarray) -> dict:
    """Per-protein and per-cell Pearson r and RMSE; NaN in ``true`` (not measured) is left out."""
    from crossmodalnet._metrics import prediction_metrics

    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if np.isnan(pred).any():
        return {"status": "nan_prediction", "n_proteins": int(true.shape[1]), "n_cells": int(true.shape[0])}
    m = prediction_metrics(pred, true)
    return {
        "status": "ok",
        "pearson_protein": m["pearson_protein"],
        "pearson_cell": m["pearson_cell"],
        "rmse": float(np.sqrt(np.nanmean((pred - true) ** 2))),
        "n_proteins": int(np.isfinite(m["per_protein"]["pearson"]).sum()),
        "n_cells": int(true.shape[0]),
    }


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def _ridge(X: np.ndarray, Y: np.ndarray):
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=RIDGE_ALPHAS).fit(X, Y)


# --------------------------------------------------------------------------------------------- the model


def _train(mdata, *, preset: str, seed: int, batch_key: str | None, time_key: str | None, max_epochs: int | None):
    """Set up and train a CrossmodalNet on ``mdata`` (every cell; 5% validation cells for early stopping)."""
    import scvi
    import torch

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = seed
    torch.manual_seed(seed)
    CrossmodalNet.setup_mudata(mdata, batch_key=batch_key, time_key=time_key)
    model = CrossmodalNet(mdata, preset=preset)
    start = time.perf_counter()
    model.train(
        max_epochs,
        train_size=0.95,
        validation_size=0.05,
        split_seed=seed,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    history = model.history or {}
    n_epochs = len(next(iter(history.values()))) if history else 0
    logger.info(
        "trained (%s preset) on %d cells: %d epochs in %.1f s",
        preset,
        mdata.n_obs,
        n_epochs,
        time.perf_counter() - start,
    )
    return model


def _rna_query(rna, obs: pd.DataFrame | None = None):
    """An RNA-only MuData of ``rna`` (AnnData) with ``obs`` columns copied to the MuData level."""
    import crossmodalnet as cmn

    query = cmn.pp.to_mudata(rna.copy())
    if obs is not None:
        for col in obs.columns:
            query.obs[col] = obs[col].to_numpy()
    return query


# --------------------------------------------------------------------------------------------- experiment a


def build_union(data_dir: Path):
    """BMMC + PBMC 1k as one MuData with NaN for proteins a reference did not measure.

    Each reference is normalised on its own before joining: RNA with :func:`crossmodalnet.pp.log_normalize` of
    its stored counts (then restricted to the genes both share, by Ensembl ID), proteins with per-cell
    :func:`crossmodalnet.pp.clr` of its counts over its own panel (isotype controls dropped first, as in the
    benchmark loaders).

    Returns
    -------
    The joined MuData (``obs["reference"]``: ``"bmmc"`` / ``"pbmc"``), the harmonisation report, and the
    harmonised protein names of each panel.
    """
    import anndata as ad
    import mudata as md

    import crossmodalnet as cmn
    from crossmodalnet._utils import shared_feature_names_quiet

    refs = {}
    for label, folder in (("bmmc", "bmmc_cite_600"), ("pbmc", "pbmc1k_protein_v3")):
        rna = ad.read_h5ad(data_dir / folder / "rna.h5ad")
        adt = ad.read_h5ad(data_dir / folder / "adt.h5ad")
        cells = rna.obs_names.intersection(adt.obs_names, sort=False)
        rna, adt = rna[cells].copy(), adt[cells].copy()
        if "counts" in rna.layers:
            rna.X = rna.layers["counts"].copy()
            del rna.layers["counts"]
        if "counts" in adt.layers:
            adt.X = adt.layers["counts"].copy()
            del adt.layers["counts"]
        is_iso = np.array(["control" in v.lower() or v.lower().startswith("igg") for v in adt.var_names])
        adt = adt[:, ~is_iso].copy()
        rna.var_names_make_unique()
        with shared_feature_names_quiet():
            one = md.MuData({"rna": rna, "prot": adt})
        cmn.pp.log_normalize(one)
        cmn.pp.clr(one)  # per cell, across this reference's own panel
        logger.info(
            "%s: %d cells, %d genes, %d proteins (normalised on its own)", label, one.n_obs, rna.n_vars, adt.n_vars
        )
        refs[label] = one

    report = cmn.pp.harmonize_proteins(refs, inplace=True)
    logger.info("harmonize_proteins:\n%s", report[["harmonized", "match", "n_panels"]].to_string())
    panels = {k: list(v["prot"].var_names) for k, v in refs.items()}

    # genes: match by Ensembl ID, name them as BMMC does
    ids = {k: pd.Index(v["rna"].var["gene_ids"].astype(str)) for k, v in refs.items()}
    shared_ids = ids["bmmc"].intersection(ids["pbmc"], sort=False)
    shared_ids = shared_ids[~shared_ids.duplicated()]
    names = pd.Index(refs["bmmc"]["rna"].var_names[ids["bmmc"].get_indexer(shared_ids)])
    logger.info("genes shared by Ensembl ID: %d (of %d and %d)", len(shared_ids), len(ids["bmmc"]), len(ids["pbmc"]))

    rnas, prots = [], []
    for label, one in refs.items():
        rna = one["rna"][:, ids[label].get_indexer(shared_ids)].copy()
        rna.var_names = names
        rna.var = pd.DataFrame({"gene_ids": np.asarray(shared_ids)}, index=names)
        prot = one["prot"].copy()
        prot.X = np.asarray(prot.X, dtype=np.float32)
        prot.var = pd.DataFrame(index=prot.var_names)
        for a in (rna, prot):
            a.obs = pd.DataFrame({"reference": label}, index=[f"{label}:{c}" for c in a.obs_names])
            for layer in [k for k in a.layers if k is not None]:  # anndata 0.13 lists `None` (.X) too
                del a.layers[layer]
            a.uns.clear()
        rnas.append(rna)
        prots.append(prot)
    rna = ad.concat(rnas, join="inner", merge="first")
    prot = ad.concat(prots, join="outer")  # a protein a panel lacks: NaN (not measured), not zero
    prot.X = np.asarray(prot.X, dtype=np.float32)
    with shared_feature_names_quiet():  # CD52, CD38, ... are gene and protein names alike
        mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["reference"] = pd.Categorical(rna.obs["reference"].to_numpy())
    logger.info(
        "joined: %d cells × %d genes × %d proteins; %.1f%% of protein values NaN (not measured)",
        mdata.n_obs,
        rna.n_vars,
        prot.n_vars,
        100 * np.isnan(prot.X).mean(),
    )
    return mdata, report, panels


def _subset(mdata, cells: np.ndarray):
    from crossmodalnet._utils import shared_feature_names_quiet

    with shared_feature_names_quiet():
        return mdata[cells].copy()


def run_union(
    data_dir: Path, seed: int, *, preset: str, max_epochs: int | None, hide_seed: int, methods: set[str] | None = None
) -> list[dict]:
    """Experiment a: union of two panels, PBMC proteins hidden in the PBMC training cells (``methods``: a subset)."""
    mdata, _report, panels = build_union(data_dir)
    shared = sorted(set(panels["bmmc"]) & set(panels["pbmc"]))
    hidden = sorted(np.random.default_rng(hide_seed).choice(shared, size=len(shared) // 2, replace=False).tolist())
    logger.info("shared proteins (%d): %s; hidden in the PBMC training cells: %s", len(shared), shared, hidden)

    is_pbmc = (mdata.obs["reference"] == "pbmc").to_numpy()
    pbmc_idx = np.flatnonzero(is_pbmc)
    perm = np.random.default_rng(seed).permutation(pbmc_idx)
    n_test = int(round(0.2 * len(pbmc_idx)))
    test_idx, pbmc_train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    bmmc_idx = np.flatnonzero(~is_pbmc)
    logger.info(
        "seed %d: %d PBMC training cells, %d PBMC test cells, %d BMMC cells",
        seed,
        len(pbmc_train_idx),
        n_test,
        len(bmmc_idx),
    )

    test = _subset(mdata, test_idx)
    true = test["prot"][:, hidden].X
    query = _rna_query(test["rna"], test.obs[["reference"]])
    X_test = _dense(test["rna"].X)
    common = {"experiment": "union", "dataset": "bmmc_cite_600 + pbmc1k_protein_v3", "data_kind": "real", "seed": seed}
    common["proteins"] = ";".join(hidden)
    common["scored_against"] = "observed CLR (PBMC's own panel) of the hidden proteins, PBMC test cells"
    rows = []

    def wanted(method: str) -> bool:
        return methods is None or method in methods

    # union model: BMMC + PBMC training cells, the hidden proteins NaN in the PBMC training cells
    if any(wanted(m) for m in ("union", "union_own_embedding", "union_as_bmmc")):
        train = _subset(mdata, np.sort(np.concatenate([bmmc_idx, pbmc_train_idx])))
        prot = train["prot"]
        X = np.asarray(prot.X).copy()
        X[np.ix_((train.obs["reference"] == "pbmc").to_numpy(), prot.var_names.get_indexer(hidden))] = np.nan
        prot.X = X
        model = _train(train, preset=preset, seed=seed, batch_key="reference", time_key=None, max_epochs=max_epochs)
        note = f"trained on {train.n_obs} cells, batch_key='reference'"
        variants = {  # method: (batch= of predict_protein, what the note says)
            "union": (None, "predict_protein's rule: proteins PBMC did not measure decoded with the embedding of BMMC"),
            "union_own_embedding": ("pbmc", "PBMC's own batch embedding (batch='pbmc')"),
            # the PBMC embedding never saw the hidden proteins: decode the PBMC test cells as BMMC instead
            "union_as_bmmc": ("bmmc", "PBMC test cells decoded with batch='bmmc'"),
        }
        for method, (batch, what) in variants.items():
            if wanted(method):
                pred = model.predict_protein(query, batch=batch)[hidden].to_numpy()
                rows.append(common | {"method": method, "note": f"{note}; {what}"} | _score(pred, true))

    # BMMC-only model, applied to the PBMC test cells (an unseen reference: no batch key)
    bmmc = _subset(mdata, bmmc_idx)
    bmmc.mod["prot"] = bmmc["prot"][:, panels["bmmc"]].copy()
    bmmc.update()
    if wanted("bmmc_only"):
        model = _train(bmmc, preset=preset, seed=seed, batch_key=None, time_key=None, max_epochs=max_epochs)
        pred = model.predict_protein(_rna_query(test["rna"]))[hidden].to_numpy()
        rows.append(common | {"method": "bmmc_only", "note": "trained on BMMC's panel only"} | _score(pred, true))

    if wanted("ridge_bmmc"):
        ridge = _ridge(_dense(bmmc["rna"].X), _dense(bmmc["prot"][:, hidden].X))
        rows.append(
            common
            | {"method": "ridge_bmmc", "note": f"RidgeCV, alpha {ridge.alpha_:.3g}"}
            | _score(ridge.predict(X_test), true)
        )

    # PBMC-only: trained as the PBMC training cells are, it never saw the hidden proteins
    if wanted("pbmc_only"):
        rows.append(
            common
            | {
                "method": "pbmc_only",
                "status": "not_applicable",
                "n_proteins": 0,
                "n_cells": n_test,
                "note": "the PBMC training cells did not measure the hidden proteins: a PBMC-only model cannot "
                "predict them",
            }
        )
    # PBMC-only with the hidden proteins visible: an upper bound the union setting does not have
    if wanted("pbmc_only_oracle"):
        pbmc = _subset(mdata, pbmc_train_idx)
        pbmc.mod["prot"] = pbmc["prot"][:, panels["pbmc"]].copy()
        pbmc.update()
        model = _train(pbmc, preset=preset, seed=seed, batch_key=None, time_key=None, max_epochs=max_epochs)
        pred = model.predict_protein(_rna_query(test["rna"]))[hidden].to_numpy()
        rows.append(
            common
            | {"method": "pbmc_only_oracle", "note": "upper bound: trained with the hidden proteins visible"}
            | _score(pred, true)
        )
    return rows


# --------------------------------------------------------------------------------------------- experiment b


def _coverage(model, query, masked: str, true: np.ndarray, *, batch: str | None = None) -> tuple[float | None, str]:
    """Coverage of the model's ``LEVEL`` prediction intervals of ``masked`` on ``query``, or why there is none.

    The intervals are calibrated on the validation cells (split-conformal, NaN-aware: values a cell did not
    measure are left out of the calibration).
    """
    try:
        unc = model.predict_protein(query, return_uncertainty=True, level=LEVEL, rng=0, batch=batch)
    except Exception as err:  # noqa: BLE001 - any failure of the calibration means "not available" here
        return None, f"intervals not available: {type(err).__name__}: {str(err)[:200]}"
    lower, upper = unc.lower[masked].to_numpy(), unc.upper[masked].to_numpy()
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        return None, "intervals not available: NaN bounds"
    return float(
        np.mean((true >= lower) & (true <= upper))
    ), "coverage: the model's intervals (calibrated on its validation cells)"


def run_masked_planted(
    seed: int, *, preset: str, max_epochs: int | None, n_obs: int, methods: set[str] | None = None
) -> list[dict]:
    """Experiment b: one protein NaN in one batch of generated data; predict it there (``methods``: a subset)."""
    import crossmodalnet as cmn

    mdata = cmn.datasets.synthetic_cite(n_obs=n_obs, n_genes=300, n_proteins=12, n_batches=2, sparse=False, rng=seed)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)  # the full panel: the hidden values are what these cells would have had
    masked = str(mdata["prot"].var_names[0])
    batches = mdata.obs["batch"].astype(str).to_numpy()
    cells = batches == sorted(set(batches))[-1]
    j = mdata["prot"].var_names.get_loc(masked)
    true = np.asarray(mdata["prot"].X[cells, j], dtype=np.float64).copy()
    X = np.asarray(mdata["prot"].X).copy()
    X[cells, j] = np.nan
    mdata["prot"].X = X
    logger.info("seed %d: %s NaN in the %d cells of %s", seed, masked, cells.sum(), sorted(set(batches))[-1])

    common = {
        "experiment": "masked_planted",
        "dataset": f"synthetic_cite(n_obs={n_obs}, n_genes=300, n_proteins=12, n_batches=2, sparse=False, rng={seed})",
        "data_kind": "generated",
        "seed": seed,
        "proteins": masked,
        "scored_against": "hidden observed CLR values (the generator stores no noiseless per-cell protein)",
    }
    rows = []
    measuring = sorted(set(batches))[0]
    masked_batch = sorted(set(batches))[-1]
    variants = {
        "masked_model": (
            None,
            "predict_protein's rule: the masked protein decoded with the measuring batch's embedding",
        ),
        "masked_model_own_embedding": (masked_batch, f"the masked cells decoded with their own batch={masked_batch!r}"),
        "masked_model_as_measuring_batch": (measuring, f"the masked cells decoded with batch={measuring!r}"),
    }
    if methods is None or set(variants) & methods:
        model = _train(mdata, preset=preset, seed=seed, batch_key="batch", time_key="time", max_epochs=max_epochs)
        query = _rna_query(mdata["rna"][cells], mdata.obs.loc[cells, ["batch", "time"]])
        for method, (batch, what) in variants.items():
            if methods is not None and method not in methods:
                continue
            pred = model.predict_protein(query, batch=batch)[[masked]].to_numpy()
            coverage, why = _coverage(model, query, masked, true, batch=batch)
            rows.append(
                common
                | {"method": method, "coverage": coverage, "coverage_level": LEVEL, "note": f"{what}; {why}"}
                | _score(pred, true[:, None])
            )
    if methods is None or "ridge_other_batch" in methods:
        rna = _dense(mdata["rna"].X)
        ridge = _ridge(rna[~cells], X[~cells, j])
        rows.append(
            common
            | {"method": "ridge_other_batch", "note": f"RidgeCV on the measuring batch, alpha {ridge.alpha_:.3g}"}
            | _score(ridge.predict(rna[cells])[:, None], true[:, None])
        )
    return rows


# --------------------------------------------------------------------------------------------- experiment c


def map_query(model, query, *, seed: int, embedding_space: str = "span"):
    """The reference model mapped to ``query`` (its protein modality: the proteins it measured).

    :meth:`~crossmodalnet.model.CrossmodalNet.map_query` with its defaults (200 epochs, 20% of the query cells
    held out to score the mapping and check the intervals), seeded by ``cmn.settings.seed = seed`` for this call
    only: training in this script follows ``scvi.settings.seed``, as for the rows of earlier runs.
    """
    import crossmodalnet as cmn

    previous = cmn.settings.seed
    cmn.settings.seed = seed
    try:
        return model.map_query(query, level=LEVEL, embedding_space=embedding_space)
    finally:
        cmn.settings.seed = previous


def run_query(data_dir: Path, seed: int, *, preset: str, max_epochs: int | None, query_mapping: bool) -> list[dict]:
    """Experiment c: BMMC donor s1d2 held out with 10 measured proteins; predict the other 124."""
    import anndata as ad
    import mudata as md

    from crossmodalnet._utils import shared_feature_names_quiet

    folder = data_dir / "bmmc_cite_600"
    rna = ad.read_h5ad(folder / "rna.h5ad")
    adt = ad.read_h5ad(folder / "adt.h5ad")
    cells = rna.obs_names.intersection(adt.obs_names, sort=False)
    rna, adt = rna[cells].copy(), adt[cells].copy()  # .X as distributed (log-normalised RNA, per-cell CLR ADT)
    for a in (rna, adt):
        for layer in [k for k in a.layers if k is not None]:  # anndata 0.13 lists `None` (.X) too
            del a.layers[layer]
    batch = rna.obs["batch"].astype(str).to_numpy()
    ref, qry = batch == "s1d1", batch == "s1d2"
    with shared_feature_names_quiet():
        mdata = md.MuData({"rna": rna[ref].copy(), "prot": adt[ref].copy()})
    mdata.obs["batch"] = pd.Categorical(batch[ref])
    Y_ref = _dense(adt[ref].X)
    measured = [str(p) for p in adt.var_names[np.argsort(-Y_ref.var(axis=0), kind="stable")[:N_QUERY_MEASURED]]]
    others = [str(p) for p in adt.var_names if p not in measured]
    logger.info("query donor s1d2 measured the %d most variable proteins of s1d1: %s", len(measured), measured)

    true = _dense(adt[qry][:, others].X)
    query_obs = pd.DataFrame({"batch": batch[qry]}, index=rna.obs_names[qry])
    query = _rna_query(rna[qry], query_obs)
    common = {
        "experiment": "query",
        "dataset": "bmmc_cite_600",
        "data_kind": "real",
        "seed": seed,
        "proteins": f"{len(others)} not among the measured: " + ";".join(measured) + " (measured)",
        "scored_against": "observed ADT (.X as distributed) of donor s1d2, its 124 unmeasured proteins",
    }
    rows = []
    model = _train(mdata, preset=preset, seed=seed, batch_key="batch", time_key=None, max_epochs=max_epochs)
    pred = model.predict_protein(query)[others].to_numpy()
    rows.append(
        common
        | {"method": "average_embedding", "note": "plain predict_protein on the unseen donor"}
        | _score(pred, true)
    )

    if query_mapping:
        with shared_feature_names_quiet():
            query_cite = md.MuData({"rna": rna[qry].copy(), "prot": adt[qry][:, measured].copy()})
        query_cite.obs["batch"] = pd.Categorical(batch[qry])
        for method, space in (("mapped_query", "span"), ("mapped_query_free", "free")):
            mapped = map_query(model, query_cite, seed=seed, embedding_space=space)
            record = mapped.query_
            same = ""
            if space == "free" and len(model.batch_categories) < 2:
                same = "; one trained batch (s1d1), whose span is a point: map_query fits free rows for 'span' too, so "
                same += "this row is identical to mapped_query"
            calibration = record.get("calibration", {})
            pred = mapped.predict_protein(query)[others].to_numpy()
            unc = mapped.predict_protein(query, return_uncertainty=True, level=LEVEL, rng=0)
            lower, upper = unc.lower[others].to_numpy(), unc.upper[others].to_numpy()
            rows.append(
                common
                | {
                    "method": method,
                    "note": f"map_query(embedding_space={space!r}) on the {len(measured)} measured proteins; "
                    f"{record['n_cells_fitted'][0]} cells fitted, {record['n_cells_held_out'][0]} held out; "
                    "coverage: the mapped model's intervals on the unmeasured proteins of every query cell" + same,
                    "coverage": float(np.mean((true >= lower) & (true <= upper))),
                    "coverage_level": LEVEL,
                    "heldout_mse_mapped": record.get("heldout_mse_mapped"),
                    "heldout_mse_average": record.get("heldout_mse_average"),
                    "calibration_coverage_before": calibration.get("coverage_before"),
                    "calibration_coverage_after": calibration.get("coverage_after"),
                    "calibration_multiplier": calibration.get("multiplier"),
                }
                | _score(pred, true)
            )
    else:
        rows.append(common | {"method": "mapped_query", "status": "not_run", "note": "run without --no-query-mapping"})

    X_ref, X_qry = _dense(rna[ref].X), _dense(rna[qry].X)
    ridge = _ridge(X_ref, _dense(adt[ref][:, others].X))
    rows.append(
        common
        | {"method": "ridge_rna", "note": f"RidgeCV, alpha {ridge.alpha_:.3g}"}
        | _score(ridge.predict(X_qry), true)
    )
    M_ref, M_qry = _dense(adt[ref][:, measured].X), _dense(adt[qry][:, measured].X)
    ridge = _ridge(np.hstack([X_ref, M_ref]), _dense(adt[ref][:, others].X))
    rows.append(
        common
        | {
            "method": "ridge_rna_plus_measured",
            "note": f"RidgeCV on RNA and the 10 measured proteins, alpha {ridge.alpha_:.3g}",
        }
        | _score(ridge.predict(np.hstack([X_qry, M_qry])), true)
    )
    return rows


# --------------------------------------------------------------------------------------------- main


COLUMNS = [
    "experiment",
    "dataset",
    "data_kind",
    "method",
    "preset",
    "seed",
    "status",
    "pearson_protein",
    "pearson_cell",
    "rmse",
    "coverage",
    "coverage_level",
    "heldout_mse_mapped",
    "heldout_mse_average",
    "calibration_coverage_before",
    "calibration_coverage_after",
    "calibration_multiplier",
    "n_proteins",
    "n_cells",
    "proteins",
    "scored_against",
    "seconds",
    "note",
    "commit",
    "date",
    "machine",
    "command",
]


def summarise(df: pd.DataFrame) -> str:
    """Per experiment and method: per-protein r of each seed and their mean."""
    lines = []
    for (experiment, method), sub in df.groupby(["experiment", "method"], sort=False):
        ok = sub[sub["status"] == "ok"]
        if ok.empty:
            lines.append(f"{experiment:15s} {method:24s} {sub['status'].iloc[0]}")
            continue
        seeds = " ".join(f"s{int(s)}={r:.3f}" for s, r in zip(ok["seed"], ok["pearson_protein"], strict=True))
        cov = ok["coverage"].dropna() if "coverage" in ok else pd.Series(dtype=float)
        extra = f"  coverage {cov.mean():.2f}" if len(cov) else ""
        lines.append(
            f"{experiment:15s} {method:24s} per-protein r {ok['pearson_protein'].mean():.3f} ({seeds}); "
            f"per-cell r {ok['pearson_cell'].mean():.3f}; RMSE {ok['rmse'].mean():.3f}; "
            f"{int(ok['n_proteins'].iloc[0])} proteins × {int(ok['n_cells'].iloc[0])} cells{extra}"
        )
    return "\n".join(lines)


ROW_KEY = ["experiment", "method", "preset", "seed"]


def _without(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``previous`` that no row of ``new`` replaces (same experiment, method, preset and seed)."""
    keys = pd.MultiIndex.from_frame(previous[ROW_KEY].astype(str))
    replaced = keys.isin(pd.MultiIndex.from_frame(new[ROW_KEY].astype(str)))
    return previous[~replaced]


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the experiments for every seed, append rows to ``--out`` and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("default", "paper"), default=DEFAULT_PRESET)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--experiments", default="union,masked_planted,query")
    parser.add_argument(
        "--data-dir", default="../shared/data", help="folder holding bmmc_cite_600/ and pbmc1k_protein_v3/"
    )
    parser.add_argument("--out", default="benchmarks/results/panels.csv")
    parser.add_argument("--max-epochs", type=int, default=None, help="None: the preset's (500, early stopping)")
    parser.add_argument("--hide-seed", type=int, default=0, help="seed of the fixed choice of hidden PBMC proteins")
    parser.add_argument("--synthetic-cells", type=int, default=600)
    parser.add_argument("--no-query-mapping", action="store_true", help="query: leave out the mapped-query rows")
    parser.add_argument("--methods", default="", help="union and masked_planted: only these methods (comma-separated)")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--replace", action="store_true", help="overwrite --out instead of replacing the rows this run gives"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    torch.set_num_threads(1)
    experiments = [e for e in args.experiments.split(",") if e]
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    data_dir = Path(args.data_dir)
    command = "PYTHONPATH=src python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    provenance = {
        "preset": args.preset,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": _machine(),
        "command": command,
    }
    logger.info("panels benchmark: %s", provenance)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = pd.read_csv(out) if out.is_file() and not args.replace else None
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for experiment in experiments:
            start = time.perf_counter()
            logger.info("=== %s, seed %d, preset %r", experiment, seed, args.preset)
            if experiment == "union":
                new = run_union(
                    data_dir,
                    seed,
                    preset=args.preset,
                    max_epochs=args.max_epochs,
                    hide_seed=args.hide_seed,
                    methods=set(args.methods.split(",")) if args.methods else None,
                )
            elif experiment == "masked_planted":
                new = run_masked_planted(
                    seed,
                    preset=args.preset,
                    max_epochs=args.max_epochs,
                    n_obs=args.synthetic_cells,
                    methods=set(args.methods.split(",")) if args.methods else None,
                )
            else:
                new = run_query(
                    data_dir,
                    seed,
                    preset=args.preset,
                    max_epochs=args.max_epochs,
                    query_mapping=not args.no_query_mapping,
                )
            seconds = round(time.perf_counter() - start, 1)
            for row in new:
                row |= provenance | {"seconds": seconds}
                if args.note:
                    row["note"] = f"{row.get('note', '')}; {args.note}".strip("; ")
                logger.info(
                    "%s", {k: row.get(k) for k in ("experiment", "method", "seed", "status", "pearson_protein", "note")}
                )
            rows.extend(new)
            # written after every experiment, so an interrupted run keeps what it finished
            df = pd.DataFrame(rows).reindex(columns=COLUMNS)
            if previous is not None:
                df = pd.concat([_without(previous.reindex(columns=COLUMNS), df), df], ignore_index=True)
            df.to_csv(out, index=False, float_format="%.4g")
    logger.info("wrote %d rows to %s", len(rows), out)
    print(summarise(pd.DataFrame(rows).reindex(columns=COLUMNS)))


if __name__ == "__main__":
    main()
