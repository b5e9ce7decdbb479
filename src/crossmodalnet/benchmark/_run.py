"""The benchmark harness: every method × setting × data set, scored on the same test cells.

Outputs (in ``out``):

``results.csv``
    One row per data set × setting × method: status, mean per-protein and per-cell Pearson, MSE,
    split sizes, fit wall time, prediction time and throughput, peak memory (isolated runs).
``per_protein.csv`` / ``per_cell.csv``
    The distributions behind the means (Pearson and MSE per protein; Pearson per test cell).
``results.md``
    Markdown tables: accuracy per data set and setting, and the Table S2-style speed table.
``per_protein_pearson.png``
    Box plots of per-protein Pearson by method, one panel per data set × setting.
``machine.json``
    CPU, cores, threads and package versions.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import shlex
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crossmodalnet._metrics import pearson_per_cell, prediction_metrics

from ._data import REAL_DATASETS, SETTINGS, SYNTHETIC_SIZES, check_data_dir, load_dataset, make_split
from ._methods import METHODS, Split, check_requirements, make_method, method_display_name, parse_methods

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._data import BenchmarkData

logger = logging.getLogger(__name__)

METRICS = ("pearson_protein", "pearson_cell", "mse")
"""Accuracy metrics in every results row (means over proteins / cells / entries of the test cells)."""

_SETTING_TITLES = {
    "in_distribution": "in-distribution (80/5/15 split stratified by time)",
    "heldout_time": "held-out middle time point",
}


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark run (recorded in ``results.md`` as a command)."""

    data: list[str] = field(default_factory=lambda: ["synthetic"])
    sizes: list[str] = field(default_factory=lambda: ["D1"])
    speed_sizes: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    out: str = "results"
    quick: bool = False
    speed: bool = False
    max_epochs: int = 500
    seed: int = 0
    threads: int = 2
    data_dir: str | None = None
    speed_timeout: float = 1800.0

    def command(self) -> str:
        """The ``crossmodalnet benchmark`` command line that reproduces this run."""
        parts = [
            "crossmodalnet benchmark",
            f"--data {','.join(self.data)}",
            f"--sizes {','.join(self.sizes)}",
        ]
        if self.speed:
            parts += [
                "--speed",
                f"--speed-sizes {','.join(self.speed_sizes)}",
                f"--speed-timeout {self.speed_timeout:g}",
            ]
        if self.methods != list(METHODS):
            parts.append(f"--methods {','.join(self.methods)}")
        if self.settings != list(SETTINGS):
            parts.append(f"--settings {','.join(self.settings)}")
        if self.quick:
            parts.append("--quick")
        parts += [f"--max-epochs {self.max_epochs}", f"--seed {self.seed}", f"--threads {self.threads}"]
        if self.data_dir:
            parts.append(f"--data-dir {shlex.quote(str(self.data_dir))}")
        parts.append(f"--out {shlex.quote(str(self.out))}")
        return " ".join(parts)


# --- memory and machine ------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB); it cannot be reset."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if platform.system() != "Darwin" else peak / 1024.0**2


def _current_rss_mb() -> float:
    """Current resident memory of this process (MB), or NaN where ``/proc`` is unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0**2
    except (OSError, ValueError, IndexError):
        return math.nan


class _RSSSampler:
    """Sample this process's resident memory every ``interval`` seconds in a thread.

    ``ru_maxrss`` cannot be reset, so it mostly reflects data generation; sampling during the fit
    gives the fit's own peak (to within the sampling interval).
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_mb = _current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _current_rss_mb())

    def __enter__(self) -> _RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _current_rss_mb())


def _loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return math.nan


def _git_revision() -> str:
    """``<commit>`` (plus ``-dirty`` with uncommitted changes) of the source tree, or ``"unknown"``."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if rev.returncode != 0:
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    """CPU, cores, memory, thread settings and package versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in (
        "crossmodalnet-tools",
        "torch",
        "scvi-tools",
        "lightning",
        "scikit-learn",
        "lightgbm",
        "numpy",
        "scipy",
        "anndata",
        "mudata",
        "scanpy",
        "muon",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024.0**3
    except (ValueError, OSError, AttributeError):
        mem_gb = math.nan
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "git": _git_revision(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": round(mem_gb, 1),
        "threads": threads,
        "torch_threads": threads,
        "gpu": "none used (accelerator='cpu')",
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _limit_threads(threads: int):
    """Limit torch and BLAS/OpenMP pools to ``threads``; returns the threadpoolctl context (or None)."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return None
    return threadpool_limits(limits=threads)


# --- one method on one split ---------------------------------------------------------------------------
def _base_row(data: BenchmarkData, setting: str, key: str) -> dict:
    cls, _ = METHODS[key]
    return {
        "dataset": data.name,
        "sanity_check": data.sanity_check,
        "n_cells": data.n_obs,
        "n_genes": int(data.X.shape[1]),
        "n_proteins": int(data.Y.shape[1]),
        "time_role": data.time_role,
        "setting": setting,
        "method": method_display_name(key),
        "method_key": key,
        "uses_time": cls.uses_time if data.has_time else "— (no time covariate)",
        "status": "ok",
    }


def run_method(
    key: str, data: BenchmarkData, split: Split, *, cfg: BenchmarkConfig, isolated: bool = False
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Fit one method on ``split``, predict the test cells and score them.

    Returns the results row, the per-protein table and the per-cell table. A method that raises
    gets ``status = "failed: <reason>"`` and NaN metrics; the exception is logged, not raised.
    """
    row = _base_row(data, split.setting, key)
    row.update({"n_train": int(split.train.size), "n_val": int(split.val.size), "n_test": int(split.test.size)})
    row.update({"isolated_process": isolated, "threads": cfg.threads})
    empty = pd.DataFrame()
    method = make_method(key, seed=cfg.seed, quick=cfg.quick, threads=cfg.threads, max_epochs=cfg.max_epochs)
    rss_before = _current_rss_mb()
    peak_before = _peak_rss_mb()
    try:
        with _RSSSampler() as sampler:
            t0 = time.perf_counter()
            method.fit_split(data, split)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pred = np.asarray(method.predict_split(data, split), dtype=np.float64)
            predict_s = time.perf_counter() - t0
    except Exception as err:  # any failure of one method is recorded, the harness goes on
        reason = f"{type(err).__name__}: {err}".replace("\n", " ")[:200]
        logger.warning("%s / %s / %s failed: %s", data.name, split.setting, row["method"], reason, exc_info=True)
        row.update(dict.fromkeys(METRICS, math.nan))
        row["status"] = f"failed: {reason}"
        return row, empty, empty
    true = np.asarray(data.Y[split.test], dtype=np.float64)
    if pred.shape != true.shape or not np.isfinite(pred).all():
        row.update(dict.fromkeys(METRICS, math.nan))
        row["status"] = f"failed: prediction of shape {pred.shape} with non-finite values or wrong shape"
        return row, empty, empty
    with np.errstate(all="ignore"):
        metrics = prediction_metrics(pred, true)
    r_prot = metrics["per_protein"]["pearson"]
    r_cell = pearson_per_cell(pred, true)
    row.update({k: metrics[k] for k in METRICS})
    row.update(
        {
            "pearson_protein_median": float(np.nanmedian(r_prot)) if np.isfinite(r_prot).any() else math.nan,
            "n_proteins_undefined_r": int((~np.isfinite(r_prot)).sum()),
            "fit_seconds": fit_s,
            "predict_seconds": predict_s,
            "predict_cells_per_s": split.test.size / predict_s if predict_s > 0 else math.nan,
            "rss_before_fit_mb": rss_before,
            "fit_peak_rss_mb": sampler.peak_mb,
            "fit_extra_rss_mb": sampler.peak_mb - rss_before,
            "peak_rss_before_fit_mb": peak_before,
            "peak_rss_mb": _peak_rss_mb(),
            "details": json.dumps({k: v for k, v in method.info.items() if v is not None}, default=float),
        }
    )
    per_protein = pd.DataFrame(
        {
            "dataset": data.name,
            "setting": split.setting,
            "method": row["method"],
            "protein": np.asarray(data.protein_names),
            "pearson": r_prot,
            "mse": metrics["per_protein"]["mse"],
        }
    )
    per_cell = pd.DataFrame(
        {
            "dataset": data.name,
            "setting": split.setting,
            "method": row["method"],
            "cell": np.asarray(data.obs_names)[split.test],
            "time": pd.Series(np.asarray(data.time)[split.test]).astype(str).to_numpy(),
            "pearson": r_cell,
        }
    )
    logger.info(
        "%s / %s / %s: per-protein r %.3f, per-cell r %.3f, MSE %.4f, fit %.1f s",
        data.name,
        split.setting,
        row["method"],
        row["pearson_protein"],
        row["pearson_cell"],
        row["mse"],
        fit_s,
    )
    return row, per_protein, per_cell


def _split_of(data: BenchmarkData, setting: str, seed: int) -> Split:
    train, val, test = make_split(data, setting, seed=seed)
    return Split(setting=setting, seed=seed, train=train, val=val, test=test)


def _fingerprint(data: BenchmarkData) -> tuple[int, int, float, float]:
    """Shape and sums of inputs and targets: the child checks it rebuilt the parent's data."""
    return (data.n_obs, int(data.X.shape[1]), float(data.X.sum(dtype=np.float64)), float(data.Y.sum(dtype=np.float64)))


def _worker(spec: str, split: Split, fingerprint: tuple, key: str, cfg_dict: dict, conn) -> None:
    """Child-process entry: load the data, run one method on the parent's split, send back its row and tables."""
    cfg = BenchmarkConfig(**cfg_dict)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from crossmodalnet import settings

    settings.verbosity = "warning"  # the package's logger has its own handler; keep the child to warnings
    try:
        limits = _limit_threads(cfg.threads)
        data = load_dataset(spec, seed=cfg.seed, data_dir=cfg.data_dir)
        if not np.allclose(_fingerprint(data), fingerprint, rtol=1e-9, atol=0):
            raise RuntimeError(f"the child process rebuilt different data for {spec!r} than the parent")
        row, pp, pc = run_method(key, data, split, cfg=cfg, isolated=True)
        if limits is not None:
            limits.unregister()
        conn.send(("ok", row, pp.to_dict("list"), pc.to_dict("list")))
    except Exception as err:  # report to the parent instead of dying silently
        logging.getLogger(__name__).warning("worker failed", exc_info=True)
        conn.send(("error", f"{type(err).__name__}: {err}"[:200], None, None))
    finally:
        conn.close()


def _run_isolated(
    spec: str, data: BenchmarkData, split: Split, key: str, cfg: BenchmarkConfig
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Run one method in a fresh spawned process, so its peak memory is its own.

    The child regenerates (or reloads) the data from ``spec`` and uses the parent's split.
    """
    setting = split.setting
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(spec, split, _fingerprint(data), key, asdict(cfg), child), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    child.close()
    msg = None
    if parent.poll(cfg.speed_timeout):
        try:
            msg = parent.recv()
        except EOFError:
            msg = None
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    row = _base_row(data, setting, key)
    row.update({"isolated_process": True, "threads": cfg.threads})
    if msg is None:
        elapsed = time.perf_counter() - t0
        if elapsed >= cfg.speed_timeout:
            row["status"] = f"timeout: stopped after {cfg.speed_timeout:g} s"
        else:
            row["status"] = f"failed: worker exited with code {proc.exitcode}"
        row.update(dict.fromkeys(METRICS, math.nan))
        logger.warning("%s / %s / %s: %s", data.name, setting, row["method"], row["status"])
        return row, pd.DataFrame(), pd.DataFrame()
    status, payload, pp, pc = msg
    if status != "ok":
        row["status"] = f"failed: {payload}"
        row.update(dict.fromkeys(METRICS, math.nan))
        return row, pd.DataFrame(), pd.DataFrame()
    logger.info(
        "%s / %s / %s (own process): per-protein r %.3f, fit %.1f s, peak RSS %.0f MB",
        data.name,
        setting,
        payload["method"],
        payload.get("pearson_protein", math.nan),
        payload.get("fit_seconds", math.nan),
        payload.get("peak_rss_mb", math.nan),
    )
    return payload, pd.DataFrame(pp), pd.DataFrame(pc)


# --- tables and plot -------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += [
        "| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in r) + " |"
        for r in df.itertuples(index=False)
    ]
    return "\n".join(lines)


def accuracy_table(results: pd.DataFrame, dataset: str, setting: str) -> pd.DataFrame:
    """Rows of one data set and setting, formatted for the Markdown report."""
    sub = results[(results["dataset"] == dataset) & (results["setting"] == setting)]
    rows = []
    for r in sub.itertuples(index=False):
        ok = r.status == "ok"
        rows.append(
            {
                "method": r.method,
                "per-protein r": _fmt(r.pearson_protein) if ok else r.status,
                "per-cell r": _fmt(r.pearson_cell) if ok else "",
                "MSE": _fmt(r.mse, 4) if ok else "",
                "fit (s)": _fmt(getattr(r, "fit_seconds", math.nan), 1) if ok else "",
                "time enters as": r.uses_time or "—",
            }
        )
    return pd.DataFrame(rows)


def speed_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table S2 style: fit time, peak memory and prediction throughput per method and size (isolated runs)."""
    sub = results[
        pd.to_numeric(results["isolated_process"], errors="coerce").fillna(0).astype(bool)
        & results["dataset"].str.startswith("synthetic_")
        & (results["setting"] == "in_distribution")
    ]
    if sub.empty:
        return pd.DataFrame()
    out = {}
    for r in sub.itertuples(index=False):
        size = r.dataset.removeprefix("synthetic_")
        shape = SYNTHETIC_SIZES.get(size, (r.n_cells, r.n_genes, r.n_proteins))
        label = f"{size} ({shape[0]:,}×{shape[1]:,})"
        d = out.setdefault(r.method, {"method": r.method})
        if r.status == "ok":
            d[f"{label} fit (s)"] = _fmt(r.fit_seconds, 1)
            d[f"{label} fit peak RSS (MB)"] = _fmt(r.fit_peak_rss_mb, 0)
            d[f"{label} predict (cells/s)"] = _fmt(r.predict_cells_per_s, 0)
        else:
            d[f"{label} fit (s)"] = r.status
            d[f"{label} fit peak RSS (MB)"] = ""
            d[f"{label} predict (cells/s)"] = ""
    return pd.DataFrame(list(out.values())).fillna("")


def plot_per_protein(per_protein: pd.DataFrame, path: Path) -> Path | None:
    """Box plots of per-protein Pearson by method, one panel per data set × setting (Agg canvas)."""
    if per_protein.empty:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(per_protein.groupby(["dataset", "setting"], sort=False))
    ncol = min(2, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = Figure(figsize=(7.5 * ncol, 3.8 * nrow), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, ((dataset, setting), df) in zip(axes.ravel(), panels, strict=False):
        methods = list(dict.fromkeys(df["method"]))
        values = [df.loc[df["method"] == m, "pearson"].dropna().to_numpy() for m in methods]
        keep = [i for i, v in enumerate(values) if v.size]
        ax.boxplot([values[i] for i in keep], tick_labels=[methods[i] for i in keep], showmeans=True)
        ax.set_title(f"{dataset} — {setting.replace('_', ' ')}", fontsize=10)
        ax.set_ylabel("per-protein Pearson r (test cells)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.axhline(0, color="0.7", lw=0.8)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    fig.savefig(path, dpi=120)
    return path


def write_report(
    results: pd.DataFrame, cfg: BenchmarkConfig, machine: dict, wall_s: float, out: Path, notes: Sequence[str] = ()
) -> str:
    """Write ``results.md`` and return its text."""
    lines = [
        "# CrossmodalNet benchmark results",
        "",
        f"Command: `{cfg.command()}` (source: {machine.get('git', 'unknown')})",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPU cores, {machine['memory_gb']} GB RAM, "
        f"no GPU; torch/BLAS/LightGBM threads = {cfg.threads}. torch {machine['versions']['torch']}, "
        f"scvi-tools {machine['versions']['scvi-tools']}, scikit-learn {machine['versions']['scikit-learn']}, "
        f"lightgbm {machine['versions']['lightgbm']}. Wall time of the whole run: {wall_s / 60:.1f} min. "
        f"1-min load average at start / end: {machine.get('load_average_1min_start_end', ['?', '?'])[0]} / "
        f"{machine.get('load_average_1min_start_end', ['?', '?'])[1]}.",
        "",
        "Metrics on the test cells: **per-protein r** = Pearson correlation across test cells for each protein, "
        "averaged over proteins (the metric that separates methods); **per-cell r** = Pearson correlation across "
        "proteins for each cell, averaged over cells (inflated by the shared mean protein profile: compare with the "
        "per-time mean row, which ignores RNA); **MSE** over all test entries. Targets: CLR-normalised proteins; inputs: "
        "log-normalised RNA. Model choices use the validation cells only.",
        "",
    ]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    for (dataset, setting), _ in results.groupby(["dataset", "setting"], sort=False):
        sub = results[(results["dataset"] == dataset) & (results["setting"] == setting)]
        first = sub.iloc[0]
        tag = " (sanity check: small real set, not paper-comparable)" if bool(first["sanity_check"]) else ""
        lines += [
            f"## {dataset} — {_SETTING_TITLES.get(setting, setting)}{tag}",
            "",
            f"{int(first['n_cells'])} cells × {int(first['n_genes'])} genes × {int(first['n_proteins'])} proteins; "
            f"time: {first['time_role']}.",
        ]
        if sub["status"].str.startswith("not applicable").all():
            lines += ["", f"Not run: {first['status'].removeprefix('not applicable: ')}.", ""]
            continue
        if (sub["status"] == "ok").any():
            ok = sub[sub["status"] == "ok"].iloc[0]
            lines[-1] += f" Train/validation/test cells: {int(ok['n_train'])}/{int(ok['n_val'])}/{int(ok['n_test'])}."
        lines += ["", _md_table(accuracy_table(results, dataset, setting)), ""]
    speed = speed_table(results)
    if not speed.empty:
        lines += [
            "## Speed (paper Table S2 sizes; in-distribution split)",
            "",
            "Each method ran alone in a fresh process (multiprocessing spawn). *fit* = wall time of the whole fit, "
            "including every validation-based choice (alpha grid, SVD rank, early stopping); *fit peak RSS* = largest "
            "resident memory of that process sampled every 50 ms during fit and prediction (the data, about "
            "4 bytes × cells × genes, and the libraries included; `results.csv` also has the RSS before the fit); "
            "*predict* = test cells per second.",
            "",
            _md_table(speed),
            "",
        ]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


_STANDARD_NOTES = (
    "Time as a feature: Linear regression, Ridge, TruncatedSVD+Ridge, LightGBM and both MLPs get a one-hot time "
    "point appended to the RNA features, as the paper's baselines did. With a held-out time point its column is "
    "all-zero in training, so they cannot use it. CrossmodalNet learns a time embedding and interpolates it for "
    "a held-out time point. totalVI gets the time point as its batch.",
    "Selection on validation cells only: Ridge alpha (0.1 to 10^4), SVD rank (32 to 256) with its alpha, LightGBM "
    "rounds (cap 300, early stopping 20), and early stopping of the MLPs and CrossmodalNet (patience 10, on mean "
    "per-protein Pearson, best epoch restored); the default CrossmodalNet also chooses its linear path's ridge "
    "penalty there. 'CrossmodalNet (paper preset)' keeps the paper's Table S1 settings. "
    "LightGBM uses fixed parameters: the paper's randomized-CV tuning was not repeated.",
    "totalVI (transductive, the standard imputation recipe): trained on the raw counts of all cells, with the test "
    "cells' protein counts zeroed and the test cells in a batch of their own (proteins treated as missing). Its "
    "denoised protein expression is mapped to the target scale by the same per-cell CLR as the target, "
    "log1p(x / exp(mean(log1p(x)))). MSE is on that mapped scale, so compare totalVI mainly by Pearson.",
    "per-time mean ignores RNA. With one time point among the test cells (held-out time, pbmc) it predicts one "
    "constant profile, so its per-protein r is undefined (—), while its per-cell r shows the inflation.",
)


# --- entry point ------------------------------------------------------------------------------------
def _tasks(cfg: BenchmarkConfig) -> list[tuple[str, list[str], set[str]]]:
    """(data-set spec, settings, settings to run in isolated processes) for every data set."""
    tasks = []
    synthetic = "synthetic" in cfg.data
    sizes = list(dict.fromkeys(cfg.sizes)) if synthetic else []
    speed_sizes = list(dict.fromkeys(cfg.speed_sizes)) if cfg.speed else []
    for size in dict.fromkeys(sizes + speed_sizes):
        settings = list(cfg.settings) if size in sizes else ["in_distribution"]
        isolated = {"in_distribution"} if size in speed_sizes else set()
        tasks.append((f"synthetic:{size}", settings, isolated))
    if "programs" in cfg.data:
        tasks += [(f"programs:{size}", list(cfg.settings), set()) for size in dict.fromkeys(cfg.sizes)]
    for name in REAL_DATASETS:
        if name in cfg.data:
            tasks.append((name, list(cfg.settings), set()))
    return tasks


def run_benchmark(
    *,
    data: str | Sequence[str] = ("synthetic",),
    sizes: str | Sequence[str] | None = None,
    methods: str | Sequence[str] | None = None,
    settings: str | Sequence[str] | None = None,
    out: str | os.PathLike = "results",
    quick: bool = False,
    speed: bool = False,
    speed_sizes: str | Sequence[str] | None = None,
    max_epochs: int = 500,
    seed: int = 0,
    threads: int = 2,
    data_dir: str | os.PathLike | None = None,
    speed_timeout: float = 1800.0,
) -> pd.DataFrame:
    """Run the benchmark and write its tables, plot and machine record to ``out``.

    Parameters
    ----------
    data
        ``"synthetic"``, ``"programs"`` (``synthetic_cite(structure="programs")`` at ``sizes``),
        ``"bmmc"`` (``bmmc_cite_600``), ``"pbmc"`` (``pbmc1k_protein_v3``) and/or ``"dyngen"``
        (``dyngen_bifurcating_200``).
    sizes
        Synthetic sizes (keys of ``SYNTHETIC_SIZES``) scored in every
        setting; default ``["D1"]``, or ``["quick"]`` with ``quick=True``.
    methods
        Method keys (see ``METHODS``); default all.
    settings
        ``"in_distribution"`` and/or ``"heldout_time"``; default both.
    out
        Output folder (created).
    quick
        Tiny model settings (few epochs, small networks) for smoke tests.
    speed
        Run each method of the in-distribution setting of ``speed_sizes`` in its own process and
        report the Table S2-style speed table (fit time, peak memory, prediction throughput).
    speed_sizes
        Synthetic sizes for the speed table (default: ``sizes``); sizes not in ``sizes`` run the
        in-distribution setting only.
    max_epochs
        Epoch cap of the neural methods (they stop early on validation).
    seed
        Seed of data generation, splits and models.
    threads
        Threads for torch, BLAS and LightGBM.
    data_dir
        Folder holding the real data sets, one subfolder each (``bmmc_cite_600/``, ``pbmc1k_protein_v3/``,
        ``dyngen_bifurcating_200/``; e.g. ``shared/data`` beside the repository). Needed when ``data`` names a
        real set; a missing folder or file is an error before anything runs.
    speed_timeout
        Seconds after which an isolated run is stopped and recorded as a timeout.

    Returns
    -------
    The results table (also written to ``out/results.csv``).
    """

    def _list(value, default):
        if value is None:
            return list(default)
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)

    t_start = time.perf_counter()
    # Idle OpenMP threads sleep instead of spinning, so pools of torch, BLAS and LightGBM do not starve each
    # other. OpenMP reads this when it loads: it applies to this process if torch and LightGBM are not loaded
    # yet (as from the command line) and always to the isolated runs, which inherit the environment.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load_start = _loadavg()
    size_list = _list(sizes, ["quick"] if quick else ["D1"])
    cfg = BenchmarkConfig(
        data=_list(data, ["synthetic"]),
        sizes=size_list,
        speed_sizes=_list(speed_sizes, size_list) if speed else [],
        methods=parse_methods(methods),
        settings=_list(settings, SETTINGS),
        out=str(out),
        quick=quick,
        speed=speed,
        max_epochs=max_epochs,
        seed=seed,
        threads=threads,
        data_dir=str(data_dir) if data_dir is not None else None,
        speed_timeout=speed_timeout,
    )
    unknown = set(cfg.data) - {"synthetic", "programs", *REAL_DATASETS}
    if unknown:
        raise ValueError(f"Unknown data {sorted(unknown)}; choose from {['synthetic', 'programs', *REAL_DATASETS]}.")
    check_data_dir([name for name in REAL_DATASETS if name in cfg.data], data_dir)
    check_requirements(cfg.methods)
    for s in cfg.settings:
        if s not in SETTINGS:
            raise ValueError(f"Unknown setting {s!r}; choose from {SETTINGS}.")
    for s in set(cfg.sizes) | set(cfg.speed_sizes):
        if s not in SYNTHETIC_SIZES:
            raise ValueError(f"Unknown size {s!r}; choose from {list(SYNTHETIC_SIZES)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(threads)
    limits = _limit_threads(threads)
    rows: list[dict] = []
    per_protein: list[pd.DataFrame] = []
    per_cell: list[pd.DataFrame] = []
    notes: list[str] = list(_STANDARD_NOTES)
    try:
        for spec, settings_, isolated in _tasks(cfg):
            data_ = load_dataset(spec, seed=seed, data_dir=data_dir)
            logger.info("data %s", data_.describe())
            for setting in settings_:
                if setting == "heldout_time" and data_.holdout is None:
                    for key in cfg.methods:
                        row = _base_row(data_, setting, key)
                        row.update(dict.fromkeys(METRICS, math.nan))
                        row["status"] = f"not applicable: {data_.holdout_reason}"
                        rows.append(row)
                    continue
                split = _split_of(data_, setting, seed)
                for key in cfg.methods:
                    if setting in isolated:
                        row, pp, pc = _run_isolated(spec, data_, split, key, cfg)
                    else:
                        row, pp, pc = run_method(key, data_, split, cfg=cfg)
                    rows.append(row)
                    per_protein.append(pp)
                    per_cell.append(pc)
    finally:
        if limits is not None:
            limits.unregister()
    wall_s = time.perf_counter() - t_start
    results = pd.DataFrame(rows)
    for col in (*METRICS, "fit_seconds", "isolated_process"):
        if col not in results:
            results[col] = math.nan
    pp_all = (
        pd.concat([p for p in per_protein if not p.empty], ignore_index=True)
        if any(not p.empty for p in per_protein)
        else pd.DataFrame(columns=["dataset", "setting", "method", "protein", "pearson", "mse"])
    )
    pc_all = (
        pd.concat([p for p in per_cell if not p.empty], ignore_index=True)
        if any(not p.empty for p in per_cell)
        else pd.DataFrame(columns=["dataset", "setting", "method", "cell", "time", "pearson"])
    )
    machine["run_wall_seconds"] = wall_s
    machine["load_average_1min_start_end"] = [load_start, _loadavg()]
    machine["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    machine["command"] = cfg.command()
    results.to_csv(out / "results.csv", index=False)
    pp_all.to_csv(out / "per_protein.csv", index=False)
    pc_all.to_csv(out / "per_cell.csv", index=False)
    (out / "machine.json").write_text(json.dumps(machine, indent=2, default=str))
    if plot_per_protein(pp_all, out / "per_protein_pearson.png") is None:
        notes.append("no per-protein results to plot")
    write_report(results, cfg, machine, wall_s, out, notes)
    logger.info("wrote %s (results.csv, per_protein.csv, per_cell.csv, results.md, plot, machine.json)", out)
    return results
