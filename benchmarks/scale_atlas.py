"""Atlas imputation out of core: streamed-to-store and dask prediction at 10⁶+ generated cells (CPU).

Usage::

    python benchmarks/scale_atlas.py --out results/scale_atlas --cells 1000000,2000000 --genes 2000 \\
        --density 0.1 --threads 2 --memory-cells 1000000 --dask-cells 1000000 --dask-workers 1,2

The model and the generated RNA-only ``.h5mu`` queries are those of ``benchmarks/scale_predict.py``
(same specs, reused when present in ``--data``). Every measurement runs in a fresh process under
``/usr/bin/time -v``; *peak RSS* is its "Maximum resident set size" (for the dask rows: the client
process; each worker's own peak is recorded from the workers):

- ``store``: ``atlas = mudata.read_h5mu(path, backed="r")`` then
  ``cmn.tl.predict_protein(atlas, model, batch_size=..., out=<tmp>.zarr)``; the call's cells/s and the
  process's wall time (model load, file open, prediction, write) are recorded.
- ``store_h5ad``: the same query written as an RNA-only ``.h5ad`` (``--query-format h5ad``), opened with
  ``cmn.pp.to_mudata(anndata.read_h5ad(path, backed="r"))`` (what ``crossmodalnet predict`` did with an
  ``.h5ad`` before ``predict_atlas``): mudata's backed ``read_h5mu`` builds per-cell maps for the whole file (measured: +875 MB and
  73 s at 2M cells, against +333 MB and 4 s for this route).
- ``file_h5ad``, ``file_zarr``: ``cmn.tl.predict_atlas(path, model, out=<tmp>.zarr, batch_size=...)`` on the query file itself
  (``--query-format h5ad`` or ``zarr``; ``--file-cells``): opened as an h5py or zarr group and read block by
  block, cell names included, file to file (what ``crossmodalnet predict`` does with an ``.h5ad``).
- ``file_h5ad_uncertainty``, ``file_zarr_uncertainty`` (``--uncertainty``): the same with ``uncertainty=True``,
  the spread and the 90 % interval written into the store's ``layers`` block by block.
- ``memory``: ``mudata.read_h5mu(path)`` (RNA in memory) then ``model.predict_protein(atlas)``: the
  in-memory rate the streamed path is compared with (only where it fits: ``--memory-cells``).
- ``dask``: a ``LocalCluster(n_workers=k, threads_per_worker=1, processes=True)``; the RNA matrix
  is ``anndata.experimental.read_elem_lazy`` of the file's ``mod/rna/X`` (``batch_size`` rows per
  chunk), and ``cmn.tl.predict_protein(mdata, model, out=<tmp>.zarr)`` writes from the workers.

Writes ``scale_atlas.csv`` and ``scale_atlas.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_predict as sp


def _vmhwm_mb() -> float:
    """Peak RSS (``VmHWM``) of the calling process, in MB (run on each dask worker)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    sp._quiet()
    import mudata as md

    import crossmodalnet as cmn
    from crossmodalnet.model import CrossmodalNet

    model = CrossmodalNet.load(job["model_dir"])
    out = Path(job["store"])
    record: dict = {}
    if job["mode"] in ("store", "store_h5ad"):
        t_open = time.perf_counter()
        if job["mode"] == "store":
            atlas = md.read_h5mu(job["path"], backed="r")
        else:
            import anndata as ad

            atlas = cmn.pp.to_mudata(ad.read_h5ad(job["path"], backed="r"))
        record["open_s"] = time.perf_counter() - t_open
        t0 = time.perf_counter()
        cmn.tl.predict_protein(atlas, model, batch_size=job["batch_size"], out=out, overwrite=True)
        record["seconds"] = time.perf_counter() - t0
        n = atlas.n_obs
        if job["mode"] == "store":
            atlas.file.close()
        else:
            atlas.mod["rna"].file.close()
    elif job["mode"].startswith("file"):
        t0 = time.perf_counter()
        uncertainty = job["mode"].endswith("_uncertainty")
        cmn.tl.predict_atlas(
            job["path"], model, out=out, batch_size=job["batch_size"], overwrite=True, uncertainty=uncertainty
        )
        record["seconds"] = time.perf_counter() - t0
        n = int(job["cells"])
    elif job["mode"] == "memory":
        if job["path"].endswith((".h5ad", ".zarr")):
            import anndata as ad

            read = ad.read_zarr if job["path"].endswith(".zarr") else ad.read_h5ad
            atlas = cmn.pp.to_mudata(read(job["path"]))
        else:
            atlas = md.read_h5mu(job["path"])
        t0 = time.perf_counter()
        pred = model.predict_protein(atlas, batch_size=job["batch_size"])
        record["seconds"] = time.perf_counter() - t0
        n = pred.shape[0]
        del pred
    else:
        import anndata as ad
        import h5py
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=job["workers"], threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="3GB"
        )
        client = Client(cluster)
        client.run(lambda: __import__("crossmodalnet.model"))  # workers import torch before the clock starts
        f = h5py.File(job["path"], "r")
        root = f if job["path"].endswith(".h5ad") else f["mod/rna"]
        X = ad.experimental.read_elem_lazy(root["X"], chunks=(job["batch_size"], -1))
        obs = ad.io.read_elem(root["obs"])
        var = ad.io.read_elem(root["var"])
        mdata = cmn.pp.to_mudata(ad.AnnData(X=X, obs=obs, var=var))
        t0 = time.perf_counter()
        cmn.tl.predict_protein(mdata, model, out=out, overwrite=True)
        record["seconds"] = time.perf_counter() - t0
        n = mdata.n_obs
        record["worker_peak_rss_mb"] = max(client.run(_vmhwm_mb).values())
        client.close()
        cluster.close()
        f.close()
    record["cells_per_s"] = n / record["seconds"]
    record["load_1min"] = os.getloadavg()[0]
    return record


def _run(job: dict, timeout: float) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(job["threads"])
    env["PYTHONWARNINGS"] = "ignore"
    cmd = ["/usr/bin/time", "-v", sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "note": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
        return {"status": "failed", "note": f"exit {proc.returncode}: {' | '.join(tail)}"[:400]}
    record = json.loads(lines[-1][len("RESULT ") :])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    record["peak_rss_mb"] = int(rss.group(1)) / 1024 if rss else float("nan")
    record["process_s"] = wall
    record["status"] = "ok"
    return record


def _markdown(df: pd.DataFrame, header: str) -> str:
    lines = [
        header,
        "",
        "| path | cells | workers | batch | call s | cells/s | vs in-memory | process wall s | peak RSS (MB) | "
        "worker peak RSS (MB) | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mem = df[(df["mode"] == "memory") & (df["status"] == "ok")]
    rate = mem["cells_per_s"].max() if len(mem) else float("nan")
    for r in df.to_dict("records"):
        if r["status"] != "ok":
            lines.append(f"| {r['mode']} | {r['cells']:,} | | | | | | | | | {r['status']}: {r.get('note', '')} |")
            continue
        ratio = r["cells_per_s"] / rate if rate == rate else float("nan")
        wpeak = r.get("worker_peak_rss_mb")
        workers = r.get("workers")
        workers = "" if workers is None or workers != workers else int(workers)
        lines.append(
            f"| {r['mode']} | {r['cells']:,} | {workers} | {r['batch_size']:,} | {r['seconds']:.1f} | "
            f"{r['cells_per_s']:,.0f} | {ratio:.2f} | {r['process_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
            f"{'' if wpeak is None or wpeak != wpeak else f'{wpeak:,.0f}'} | {r['load_1min']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/scale_atlas")
    parser.add_argument("--data", default=None, help="work folder for the model and queries (default <out>/data)")
    parser.add_argument("--cells", default="1000000,2000000", help="store-path sizes")
    parser.add_argument(
        "--query-format",
        choices=("h5mu", "h5ad", "zarr"),
        default="h5mu",
        help="file of the generated queries; with h5ad the store rows open it as a backed AnnData (store_h5ad); "
        "with zarr there are no store rows",
    )
    parser.add_argument("--file-cells", default="", help="sizes of the file-to-file runs (h5ad or zarr queries)")
    parser.add_argument(
        "--uncertainty", action="store_true", help="the file-to-file runs write intervals too (uncertainty=True)"
    )
    parser.add_argument("--memory-cells", default="1000000", help="sizes of the in-memory baseline")
    parser.add_argument("--dask-cells", default="1000000", help="sizes of the dask runs")
    parser.add_argument("--dask-workers", default="1,2")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--proteins", type=int, default=50)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the store and in-memory runs")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--train-cells", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
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
    load_start = os.getloadavg()
    model_dir = sp._ensure_model(args, data_dir)
    meta = sp._model_meta(model_dir)
    sizes = {
        int(float(c))
        for key in ("cells", "memory_cells", "dask_cells", "file_cells")
        for c in getattr(args, key).split(",")
        if c
    }
    queries = {n: sp._ensure_query(args, data_dir, n, meta, fmt=args.query_format) for n in sorted(sizes)}
    store_mode = "store" if args.query_format == "h5mu" else "store_h5ad"
    store = data_dir / "pred_tmp.zarr"

    jobs = []
    for n in sp._ints(args.memory_cells):
        jobs.append({"mode": "memory", "cells": n})
    if args.query_format == "zarr" and (sp._ints(args.cells) or sp._ints(args.dask_cells)):
        parser.error("--query-format zarr has no store or dask rows: pass --cells '' --dask-cells ''")
    if args.query_format == "h5mu" and sp._ints(args.file_cells):
        parser.error("the file rows read an .h5ad or .zarr query: pass --query-format h5ad or zarr")
    for n in sp._ints(args.cells):
        jobs.append({"mode": store_mode, "cells": n})
    for n in sp._ints(args.file_cells):
        jobs.append({"mode": f"file_{args.query_format}" + ("_uncertainty" if args.uncertainty else ""), "cells": n})
    for n in sp._ints(args.dask_cells):
        for k in sp._ints(args.dask_workers):
            jobs.append({"mode": "dask", "cells": n, "workers": k})
    rows = []
    for job in jobs:
        path, spec = queries[job["cells"]]
        full = {
            **job,
            "path": str(path),
            "model_dir": str(model_dir),
            "store": str(store),
            "batch_size": args.batch_size,
            "threads": 1 if job["mode"] == "dask" else args.threads,
        }
        rec = {**job, "batch_size": args.batch_size, "nnz": spec["nnz"], **_run(full, args.timeout)}
        shutil.rmtree(store, ignore_errors=True)
        rows.append(rec)
        pd.DataFrame(rows).to_csv(out / "scale_atlas.partial.csv", index=False)
        print(
            {
                k: rec.get(k)
                for k in ("mode", "cells", "workers", "seconds", "cells_per_s", "peak_rss_mb", "status", "note")
            },
            flush=True,
        )
    df = pd.DataFrame(rows)
    import torch

    header = (
        f"# Atlas imputation out of core\n\nMachine: {sp._cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM, shared; torch "
        f"{torch.__version__}; load average at start {', '.join(f'{v:.1f}' for v in load_start)}, at end "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}. Git {sp._git_rev()}.\n\nCommand: `python "
        f"benchmarks/scale_atlas.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n"
    )
    df.to_csv(out / "scale_atlas.csv", index=False)
    (out / "scale_atlas.partial.csv").unlink(missing_ok=True)
    text = _markdown(df, header)
    (out / "scale_atlas.md").write_text(text)
    print("\n" + text)
    return df


if __name__ == "__main__":
    main()
