"""Prediction throughput and peak memory of CrossmodalNet on 10⁵–10⁶ generated cells (CPU).

Usage::

    python benchmarks/scale_predict.py --out results/scale --cells 100000,1000000 --genes 2000 \\
        --density 0.1 --threads 2 [--first-layer dense,sparse] [--modes memory,backed]

Steps:

1. A model with the default architecture (``n_latent=512``) is trained for ``--epochs`` epochs on
   ``cmn.datasets.synthetic_cite(n_obs=--train-cells, n_genes=--genes, n_proteins=--proteins)``
   (log-normalised RNA, CLR proteins, 3 time points) and saved in the work folder (``--data``,
   default ``<out>/data``); a saved model with the same settings is reused. Accuracy does not
   matter here, only the size of the network.
2. For each ``--cells`` count, an RNA-only query ``.h5mu`` is generated in the work folder, chunk by
   chunk (``--chunk`` rows at a time): every entry is non-zero with probability ``--density``
   (geometric gaps, so no dense matrix is ever made), values are positive, log1p-like float32. The
   first chunk is written with :func:`anndata.io.write_elem` and the others appended with
   :meth:`anndata.abc.CSRDataset.append`; the RNA genes are the model's genes and ``obs['time']``
   holds the model's time points. A file whose recorded spec matches is reused.
3. Every measurement runs in a fresh subprocess (so its peak RSS is its own): load the model,
   read the query (``memory``: ``mudata.read_h5mu(path)``; ``backed``: ``read_h5mu(path, backed="r")``),
   set ``model.module.sparse_input`` for the first layer (``sparse``: CSR batches straight into the
   first layer; ``dense``: each batch densified; only ``dense`` if the attribute does not exist),
   warm up on a small in-memory query, then time ``model.predict_protein(query, batch_size=...)``
   (best of ``--repeats``). Peak RSS is the subprocess's ``VmHWM`` (``/proc/self/status``) at the end
   (``getrusage(RUSAGE_SELF).ru_maxrss`` is recorded too, but on Linux it includes the parent's RSS
   at ``fork``); the RSS right before prediction (current and peak so far) is recorded too. The ``--batch-sizes`` are all tried
   at the smallest cell count; larger counts use the fastest batch size of their mode and first
   layer. ``get_latent_representation`` is timed at ``--latent-cells`` with the fastest batch size.
   The in-memory mode is skipped when ``nnz × 8`` bytes (CSR data and indices) exceed half of the
   available memory.

Writes ``scale_predict.csv`` and ``scale_predict.md`` to ``--out`` and prints the table, with the
machine (CPU model, cores, torch threads and version, load average at start and end) and whether the
targets are met: ≥ 50,000 cells/s prediction at 2,000 genes on 2 cores, and peak RSS < 4 GB for
1,000,000 cells in backed mode.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_CELLS_PER_S = 50_000
TARGET_RSS_MB = 4_000
TARGET_RSS_CELLS = 1_000_000
SPEC_VERSION = 1


# --- small helpers ---------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(allowed)}")
    return names


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB): ``VmHWM``, the high-water mark of its own memory.

    ``ru_maxrss`` is not used for the table: on Linux it carries over the RSS of the parent at
    ``fork``/``exec``, so a measurement subprocess would report at least its parent's RSS.
    """
    return _status_mb("VmHWM")


def _ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` (MB; kB on Linux), recorded for reference."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _git_rev() -> str:
    """Commit of the checkout this script is in (``+dirty`` with uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- model -----------------------------------------------------------------------------------------
def _model_spec(args) -> dict:
    return {
        "version": SPEC_VERSION,
        "n_genes": args.genes,
        "n_proteins": args.proteins,
        "train_cells": args.train_cells,
        "epochs": args.epochs,
        "seed": args.seed,
        "n_latent": "default",
        "uncertainty_calibrated": True,
    }


def _ensure_model(args, data_dir: Path) -> Path:
    """Train (or reuse) the default-architecture model; return its folder."""
    spec = _model_spec(args)
    model_dir = data_dir / f"model_{args.genes}g_{args.proteins}p_{args.train_cells}c_{args.epochs}e_s{args.seed}"
    if _read_json(model_dir.with_suffix(".json")) == spec and (model_dir / "model.pt").is_file():
        print(f"reusing model {model_dir}", flush=True)
        return model_dir
    _quiet()
    import scvi

    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    t0 = time.perf_counter()
    scvi.settings.seed = args.seed
    mdata = cmn.datasets.synthetic_cite(
        n_obs=args.train_cells, n_genes=args.genes, n_proteins=args.proteins, n_time_points=3, rng=args.seed
    )
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper")  # the paper architecture (n_latent=512), as measured on the Scale page
    model.train(
        max_epochs=args.epochs,
        accelerator="cpu",
        early_stopping=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model.calibrate_uncertainty()  # saved with the model: intervals of a query need no training data
    model.save(model_dir, overwrite=True)
    _write_json(model_dir.with_suffix(".json"), spec)
    print(f"trained {model} in {time.perf_counter() - t0:.1f} s → {model_dir}", flush=True)
    return model_dir


def _model_meta(model_dir: Path) -> dict:
    """Genes, time points and network size of the saved model (read in a subprocess-free way)."""
    meta_path = model_dir.with_name(model_dir.name + ".meta.json")
    meta = _read_json(meta_path)
    if meta is not None and meta.get("model_sha") == _sha(model_dir / "model.pt"):
        return meta
    _quiet()
    from crossmodalnet.model import CrossmodalNet

    model = CrossmodalNet.load(str(model_dir))
    meta = {
        "model_sha": _sha(model_dir / "model.pt"),
        "genes": [str(g) for g in model.gene_names],
        "time_categories": [str(t) for t in model.time_categories],
        "n_proteins": model.n_proteins,
        "n_latent": int(model.module.n_latent),
        "n_parameters": int(sum(p.numel() for p in model.module.parameters())),
        "has_sparse_input": hasattr(model.module, "sparse_input"),
    }
    _write_json(meta_path, meta)
    return meta


def _sha(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- query data ------------------------------------------------------------------------------------
def _csr_chunk(rng: np.random.Generator, n_rows: int, n_genes: int, density: float):
    """Random CSR block: each entry non-zero with probability ``density`` (geometric gaps), sorted indices."""
    from scipy import sparse

    n = n_rows * n_genes
    expected = n * density
    draw = int(expected + 8 * np.sqrt(expected) + 64)
    last = -1
    parts = []
    while last < n:  # almost always one draw
        gaps = rng.geometric(density, size=draw).astype(np.int64)
        pos = last + np.cumsum(gaps)
        parts.append(pos[pos < n])
        last = int(pos[-1])
    pos = np.concatenate(parts)
    rows = pos // n_genes
    cols = (pos - rows * n_genes).astype(np.int32)
    del pos
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    del rows
    # log1p of positive "normalised counts": log-normalised-looking values in (0, ~4]
    data = np.log1p(rng.gamma(2.0, 1.5, size=cols.size)).astype(np.float32)
    return sparse.csr_matrix((data, cols, indptr), shape=(n_rows, n_genes))


def _data_spec(args, n_cells: int, meta: dict) -> dict:
    genes_sha = hashlib.sha256("\n".join(meta["genes"]).encode()).hexdigest()
    return {
        "version": SPEC_VERSION,
        "n_cells": n_cells,
        "n_genes": len(meta["genes"]),
        "density": args.density,
        "seed": args.seed,
        "genes_sha256": genes_sha,
        "time_categories": meta["time_categories"],
    }


def _ensure_query(args, data_dir: Path, n_cells: int, meta: dict, fmt: str = "h5mu") -> tuple[Path, dict]:
    """Generate (or reuse) the RNA-only query (``fmt``: ``.h5mu``, ``.h5ad`` or ``.zarr``) of ``n_cells`` cells.

    Returns the path and the spec.
    """
    import anndata as ad
    import h5py
    import mudata as md
    from anndata.io import sparse_dataset, write_elem

    spec = _data_spec(args, n_cells, meta)
    if fmt != "h5mu":
        spec["format"] = fmt
    path = data_dir / f"query_{n_cells}x{spec['n_genes']}_d{args.density:g}_s{args.seed}.{fmt}"
    spec_path = path.with_suffix(".json")
    recorded = _read_json(spec_path)
    if recorded is not None and path.exists() and {k: recorded.get(k) for k in spec} == spec:
        print(f"reusing {path} ({recorded['nnz']:,} non-zeros)", flush=True)
        return path, recorded
    t0 = time.perf_counter()
    spec_path.unlink(missing_ok=True)
    rng = np.random.default_rng([args.seed, n_cells])
    n_genes = spec["n_genes"]
    times = np.asarray(meta["time_categories"])
    obs = pd.DataFrame(index=pd.Index([f"cell_{i:08d}" for i in range(n_cells)], name="cell"))
    obs["time"] = pd.Categorical(times[rng.integers(0, times.size, n_cells)], categories=times)
    rna = ad.AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(meta["genes"], name="gene")))
    tmp = path.with_suffix(f".tmp.{fmt}")
    if fmt == "h5mu":
        mdata = md.MuData({"rna": rna})
        mdata.obs["time"] = obs["time"]
        mdata.write_h5mu(tmp)
        del mdata
    elif fmt == "zarr":
        rna.write_zarr(tmp)
    else:
        rna.write_h5ad(tmp)
    del rna, obs
    nnz = 0
    if fmt == "zarr":
        import zarr

        opened = contextlib.nullcontext(zarr.open_group(tmp, mode="r+", use_consolidated=False))
    else:
        opened = h5py.File(tmp, "r+")
    with opened as fh:
        group = fh["mod/rna"] if fmt == "h5mu" else fh
        if "X" in group:  # an AnnData without X may still write an empty one
            del group["X"]
        for start in range(0, n_cells, args.chunk):
            block = _csr_chunk(rng, min(args.chunk, n_cells - start), n_genes, args.density)
            nnz += block.nnz
            if start == 0:
                write_elem(group, "X", block)
            else:
                sparse_dataset(group["X"]).append(block)
            print(f"  {path.name}: {start + block.shape[0]:,}/{n_cells:,} rows", end="\r", flush=True)
            del block
    if fmt == "zarr":
        import zarr

        zarr.consolidate_metadata(str(tmp))
    if path.is_dir():
        shutil.rmtree(path)
    tmp.replace(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    spec = {**spec, "nnz": int(nnz), "file_mb": round(size / 2**20, 1)}
    _write_json(spec_path, spec)
    print(f"\ngenerated {path} ({nnz:,} non-zeros) in {time.perf_counter() - t0:.1f} s", flush=True)
    return path, spec


# --- one measurement (subprocess) ------------------------------------------------------------------
def _worker(job: dict) -> dict:
    """Run one timed measurement in this (fresh) process and return its record."""
    import torch

    torch.set_num_threads(job["threads"])
    _quiet()
    import anndata as ad
    import mudata as md

    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    load1 = os.getloadavg()[0]
    model = CrossmodalNet.load(job["model_dir"])
    module = model.module
    if hasattr(module, "sparse_input"):
        module.sparse_input = job["first_layer"] == "sparse"
    elif job["first_layer"] != "dense":
        raise RuntimeError("this crossmodalnet has no `module.sparse_input`: only the dense first layer exists")
    t0 = time.perf_counter()
    query = md.read_h5mu(job["path"], backed="r" if job["mode"] == "backed" else None)
    load_s = time.perf_counter() - t0
    X = query["rna"].X
    # warm-up on a small in-memory query (allocator and kernels), not timed
    n_warm = min(query.n_obs, 2048)
    warm = ad.AnnData(X=X[:n_warm], obs=query.obs.iloc[:n_warm].copy(), var=pd.DataFrame(index=model.gene_names))
    warm = cmn.pp.to_mudata(warm)
    getter = model.predict_protein if job["op"] == "predict_protein" else model.get_latent_representation
    getter(warm, batch_size=job["batch_size"])
    del warm
    rss_before, peak_before = _rss_mb(), _peak_rss_mb()
    times = []
    n_nan = 0
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        out = getter(query, batch_size=job["batch_size"])
        times.append(time.perf_counter() - t0)
        arr = out.to_numpy() if isinstance(out, pd.DataFrame) else out
        n_nan = int(np.isnan(arr).any(axis=1).sum())
        shape = list(arr.shape)
        del out, arr
    best = min(times)
    return {
        "seconds": best,
        "seconds_all": ";".join(f"{t:.3f}" for t in times),
        "cells_per_s": query.n_obs / best,
        "load_s": load_s,
        "rss_before_mb": rss_before,
        "peak_rss_before_mb": peak_before,
        "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": _ru_maxrss_mb(),
        "torch_threads": torch.get_num_threads(),
        "load_1min": load1,
        "X_type": type(X).__name__,
        "out_shape": "x".join(map(str, shape)),
        "rows_nan": n_nan,
    }


def _run(job: dict, timeout: float) -> dict:
    """Run ``job`` in a fresh Python process; return its record (or the error)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(job["threads"])
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "note": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"status": "failed", "note": f"exit {proc.returncode}: {' | '.join(tail)}"[:400]}
    record = json.loads(lines[-1][len("RESULT ") :])
    record["process_s"] = time.perf_counter() - t0
    record["status"] = "ok"
    return record


# --- report ----------------------------------------------------------------------------------------
def _fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:,.{digits}f}"


def _note(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status', '')}: {r.get('note', '') or ''}"
    return f"{r['rows_nan']} rows NaN" if r.get("rows_nan") else ""


def _markdown(df: pd.DataFrame, machine: dict, verdicts: list[str]) -> str:
    lines = [
        "# CrossmodalNet prediction at scale (CPU)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} logical CPUs ({machine['affinity']} usable), "
        f"{machine['mem_total_gb']:.0f} GB RAM; torch {machine['torch']} with {machine['threads']} threads; "
        f"Python {machine['python']}, anndata {machine['anndata']}, mudata {machine['mudata']}, "
        f"crossmodalnet {machine['crossmodalnet']}. Load average (1, 5, 15 min) at start "
        f"{machine['load_start']}, at end {machine['load_end']} (a measurement itself adds about "
        f"{machine['threads']}).",
        "",
        f"Command: `{machine['command']}`",
        "",
        f"Model: default architecture, {machine['n_genes']:,} genes → {machine['n_proteins']} proteins, "
        f"n_latent={machine['n_latent']} ({machine['n_parameters']:,} parameters). Query: generated CSR "
        f"log1p-like values, density {machine['density']:g}.",
        "",
        "Each row is one fresh process. *s*: wall time of the call (best of the repeats); *RSS before*: resident "
        "memory after reading the query and a warm-up, right before the timed call; *peak RSS*: the process's "
        "high-water mark (`VmHWM`) at the end; *load 1m*: 1-minute load average when the process started.",
        "",
        "| op | cells | mode | first layer | batch | s | cells/s | RSS before (MB) | peak RSS (MB) | load 1m | note |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in df.to_dict("records"):
        ok = r.get("status") == "ok"
        lines.append(
            f"| {r['op']} | {r['cells']:,} | {r['mode']} | {r['first_layer']} | {_fmt(r.get('batch_size'))} | "
            f"{_fmt(r.get('seconds'), 2) if ok else ''} | {_fmt(r.get('cells_per_s')) if ok else ''} | "
            f"{_fmt(r.get('rss_before_mb')) if ok else ''} | {_fmt(r.get('peak_rss_mb')) if ok else ''} | "
            f"{_fmt(r.get('load_1min'), 2) if ok else ''} | "
            f"{_note(r)} |"
        )
    lines += ["", "Targets:", "", *[f"- {v}" for v in verdicts], ""]
    return "\n".join(lines)


def _verdicts(df: pd.DataFrame, genes: int, threads: int) -> list[str]:
    out = []
    pred = df[(df["op"] == "predict_protein") & (df["status"] == "ok")]
    if len(pred):
        best = pred.loc[pred["cells_per_s"].idxmax()]
        met = best["cells_per_s"] >= TARGET_CELLS_PER_S
        out.append(
            f"≥ {TARGET_CELLS_PER_S:,} cells/s prediction ({genes:,} genes, {threads} threads): "
            f"{'MET' if met else 'NOT MET'}, best {best['cells_per_s']:,.0f} cells/s "
            f"({best['cells']:,} cells, {best['mode']}, {best['first_layer']} first layer, batch {best['batch_size']:,})"
        )
        for (mode, fl), sub in pred.groupby(["mode", "first_layer"]):
            b = sub.loc[sub["cells_per_s"].idxmax()]
            out.append(
                f"  {mode}, {fl} first layer: {'met' if b['cells_per_s'] >= TARGET_CELLS_PER_S else 'not met'}, "
                f"best {b['cells_per_s']:,.0f} cells/s ({b['cells']:,} cells, batch {b['batch_size']:,})"
            )
    big = pred[(pred["cells"] >= TARGET_RSS_CELLS) & (pred["mode"] == "backed")]
    if len(big):
        for r in big.to_dict("records"):
            met = r["peak_rss_mb"] < TARGET_RSS_MB
            out.append(
                f"peak RSS < {TARGET_RSS_MB:,} MB for {r['cells']:,} cells backed ({r['first_layer']} first layer, "
                f"batch {r['batch_size']:,}): {'MET' if met else 'NOT MET'}, {r['peak_rss_mb']:,.0f} MB"
            )
    else:
        out.append(f"peak RSS target ({TARGET_RSS_CELLS:,} cells, backed): not measured in this run")
    return out


# --- main ------------------------------------------------------------------------------------------
def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/scale")
    parser.add_argument("--data", default=None, help="work folder for the model and query files (default <out>/data)")
    parser.add_argument("--cells", default="100000,1000000")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--proteins", type=int, default=50)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first-layer", default="dense,sparse")
    parser.add_argument("--modes", default="memory,backed")
    parser.add_argument("--batch-sizes", default="1024,4096,16384", help="tried at the smallest cell count")
    parser.add_argument("--latent-cells", type=int, default=100_000, help="cell count of the latent timing (0: none)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per measurement (best is kept)")
    parser.add_argument("--train-cells", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=50_000, help="rows generated and written at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-fraction", type=float, default=0.5, help="of MemAvailable for the in-memory mode")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        record = _worker(json.loads(args.worker))
        print("RESULT " + json.dumps(record), flush=True)
        return pd.DataFrame([record])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cells = sorted(_ints(args.cells))
    modes = _names(args.modes, ("memory", "backed"), "mode")
    layers = _names(args.first_layer, ("dense", "sparse"), "first layer")
    batch_sizes = _ints(args.batch_sizes)
    load_start = os.getloadavg()

    import torch

    model_dir = _ensure_model(args, data_dir)
    meta = _model_meta(model_dir)
    if not meta["has_sparse_input"] and layers != ["dense"]:
        print("model.module has no `sparse_input`: measuring the dense first layer only", flush=True)
        layers = ["dense"]
    queries = {n: _ensure_query(args, data_dir, n, meta) for n in cells}

    rows: list[dict] = []
    best_bs: dict[tuple[str, str], int] = {}

    def measure(op: str, n: int, mode: str, layer: str, bs: int) -> dict:
        path, spec = queries[n]
        base = {"op": op, "cells": n, "genes": spec["n_genes"], "nnz": spec["nnz"], "mode": mode}
        base |= {"first_layer": layer, "batch_size": bs}
        need_mb = spec["nnz"] * 8 / 2**20
        avail = _mem_available_mb()
        if mode == "memory" and need_mb > args.memory_fraction * avail:
            rec = {
                **base,
                "status": "skipped",
                "note": f"in memory needs ≈{need_mb:,.0f} MB (nnz × 8 B) > {args.memory_fraction:g} × "
                f"{avail:,.0f} MB available",
            }
        else:
            job = {
                "op": op,
                "path": str(path),
                "mode": mode,
                "first_layer": layer,
                "batch_size": bs,
                "threads": args.threads,
                "repeats": args.repeats,
                "model_dir": str(model_dir),
            }
            rec = {**base, **_run(job, args.timeout)}
        rows.append(rec)
        pd.DataFrame(rows).to_csv(out / "scale_predict.partial.csv", index=False)  # survives an interrupted run
        print(
            f"{op:26s} {n:>9,} {mode:7s} {layer:6s} bs={bs:<6} "
            + (
                f"{rec['seconds']:8.2f} s {rec['cells_per_s']:>10,.0f} cells/s  RSS before {rec['rss_before_mb']:,.0f} MB"
                f"  peak {rec['peak_rss_mb']:,.0f} MB  load {rec['load_1min']:.2f}"
                if rec["status"] == "ok"
                else f"{rec['status']}: {rec.get('note', '')}"
            ),
            flush=True,
        )
        return rec

    for i, n in enumerate(cells):
        for mode in modes:
            for layer in layers:
                if i == 0:
                    recs = [measure("predict_protein", n, mode, layer, bs) for bs in batch_sizes]
                    ok = [r for r in recs if r["status"] == "ok"]
                    if ok:
                        best_bs[mode, layer] = max(ok, key=lambda r: r["cells_per_s"])["batch_size"]
                else:
                    measure("predict_protein", n, mode, layer, best_bs.get((mode, layer), 4096))
    if args.latent_cells:
        if args.latent_cells not in queries:
            print(f"--latent-cells {args.latent_cells} is not one of --cells; no latent timing", flush=True)
        else:
            for mode in modes:
                for layer in layers:
                    measure(
                        "get_latent_representation", args.latent_cells, mode, layer, best_bs.get((mode, layer), 4096)
                    )

    df = pd.DataFrame(rows)
    import anndata
    import mudata

    import crossmodalnet

    machine = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "mem_total_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "anndata": anndata.__version__,
        "mudata": mudata.__version__,
        "crossmodalnet": f"{crossmodalnet.__version__} from {Path(crossmodalnet.__file__).parent} (git {_git_rev()})",
        "load_start": ", ".join(f"{v:.2f}" for v in load_start),
        "load_end": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "n_genes": args.genes,
        "n_proteins": meta["n_proteins"],
        "n_latent": meta["n_latent"],
        "n_parameters": meta["n_parameters"],
        "density": args.density,
        "command": "python benchmarks/scale_predict.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    verdicts = _verdicts(df, args.genes, args.threads)
    for key, value in machine.items():
        df[f"machine_{key}"] = value
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "scale_predict.csv", index=False)
    (out / "scale_predict.partial.csv").unlink(missing_ok=True)
    text = _markdown(df, machine, verdicts)
    (out / "scale_predict.md").write_text(text)
    print("\n" + text)
    return df


if __name__ == "__main__":
    main()
