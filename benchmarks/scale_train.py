"""Training time per epoch (and to convergence) of CrossmodalNet at the paper's D1–D3 sizes.

Usage::

    python benchmarks/scale_train.py --out results/scale --sizes D1,D2,D3 --epochs 5 --threads 2 [--convergence D1,D2]

Each variant runs in its own fresh process (``multiprocessing`` spawn), one after the other:

- ``framework dense``: ``CrossmodalNet.train`` (scvi-tools data loader, Lightning trainer, our manual
  training plan), each mini-batch densified (the default);
- ``framework sparse``: the same with ``train(sparse_batches=True)`` (sparse CSR mini-batches into the
  first layer);
- ``framework hvg2000`` / ``framework svd256``: the same with the optional input reduction;
- ``plain torch, GradNorm``: a hand-written loop over the same module, objective (``CrossmodalModule.loss``)
  and GradNorm step (``crossmodalnet.train.gradnorm_step``) with the plan's default settings
  (discriminator every ``learning_step``-th batch), no scvi-tools or Lightning: the difference to
  ``framework dense`` is the framework's overhead;
- ``plain torch, one backward``: the same network trained on ``NLC + MSE`` with a single backward pass,
  the cheapest loop of this network (what the GradNorm algorithm itself costs is the difference to the
  previous row).

Per-epoch time is the median over ``--epochs`` epochs after one warm-up epoch, without validation.
``--convergence`` sizes also run the default ``train()`` (early stopping on validation, best weights
restored) and record the wall time and number of epochs. Data: ``cmn.datasets.synthetic_cite``
(generated), log-normalised RNA (sparse CSR), CLR proteins, 3 time points, 50 proteins.
Writes ``scale_train.csv`` and ``scale_train.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

VARIANTS = (
    "framework dense",
    "framework sparse",
    "framework hvg2000",
    "framework svd256",
    "plain GradNorm",
    "plain one",
)


def _data(size: str, seed: int):
    import crossmodalnet as cmn
    from crossmodalnet.benchmark import SYNTHETIC_SIZES

    n_obs, n_genes, n_proteins = SYNTHETIC_SIZES[size]
    mdata = cmn.datasets.synthetic_cite(n_obs=n_obs, n_genes=n_genes, n_proteins=n_proteins, n_time_points=3, rng=seed)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    return mdata


class _EpochTimer:
    """Lightning callback recording the wall time of each training epoch."""

    def __new__(cls):
        import lightning.pytorch as pl

        class Timer(pl.Callback):
            def __init__(self):
                self.times: list[float] = []
                self._t = 0.0

            def on_train_epoch_start(self, trainer, pl_module):
                self._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                self.times.append(time.perf_counter() - self._t)

        return Timer()


def _framework(mdata, variant: str, epochs: int, seed: int) -> dict:
    import scvi

    from crossmodalnet.model import CrossmodalNet

    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = seed
    kwargs = {}
    if variant.endswith("hvg2000"):
        kwargs = {"input_reduction": "hvg", "n_input_features": 2000}
    elif variant.endswith("svd256"):
        kwargs = {"input_reduction": "svd", "n_input_features": 256}
    t0 = time.perf_counter()
    model = CrossmodalNet(mdata, preset="paper", **kwargs)
    timer = _EpochTimer()
    model.train(
        max_epochs=epochs + 1,
        early_stopping=False,
        sparse_batches=variant.endswith("sparse"),
        accelerator="cpu",
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    wall = time.perf_counter() - t0
    return {"epoch_s": float(np.median(timer.times[1:])), "wall_s": wall, "epochs": len(timer.times)}


def _plan_defaults() -> dict:
    """Keyword defaults of the training plan (the Table S1 values), so this loop uses the same settings."""
    import inspect

    from crossmodalnet.train import FaderGradNormPlan

    params = inspect.signature(FaderGradNormPlan.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _plain(mdata, variant: str, epochs: int, seed: int, module_kwargs: dict | None = None) -> dict:
    """The same module, objective and GradNorm step in a hand-written loop: no scvi-tools data loader, no Lightning.

    ``module_kwargs`` go to the module (e.g. the model's ``input_reduction`` and ``n_input_features``, so the
    loop runs the model's layer shapes; a gene subset's indices are left at their initial value).
    """
    import torch
    from scipy import sparse

    from crossmodalnet._constants import REGISTRY_KEYS
    from crossmodalnet.model import stratified_split
    from crossmodalnet.module import CrossmodalModule
    from crossmodalnet.nn import discriminator_loss
    from crossmodalnet.train import gradnorm_step, is_discriminator_step, renormalize_weights

    torch.manual_seed(seed)
    hp = _plan_defaults()
    X = sparse.csr_matrix(mdata["rna"].X, dtype=np.float32)
    Y = torch.as_tensor(np.asarray(mdata["prot"].X, dtype=np.float32))
    t_codes = pd.Categorical(mdata.obs["time"]).codes.astype(np.int64)
    train, _, _ = stratified_split(t_codes, train_size=0.8, validation_size=0.05, rng=seed)
    n_time = int(t_codes.max()) + 1
    t0 = time.perf_counter()
    module = CrossmodalModule(X.shape[1], Y.shape[1], [n_time], **(module_kwargs or {}))
    opt = torch.optim.Adam(module.network_parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    opt_d = torch.optim.Adam(
        module.discriminators.parameters(), lr=hp["lr_discriminator"], weight_decay=hp["weight_decay_discriminator"]
    )
    opt_w = torch.optim.Adam([module.loss_weights], lr=hp["lr_gradnorm"])
    codes_all = torch.as_tensor(t_codes, dtype=torch.float32).reshape(-1, 1)
    rng = np.random.default_rng(seed)
    times = []
    count = 0
    module.train()
    for _ in range(epochs + 1):
        t_epoch = time.perf_counter()
        order = rng.permutation(train)
        for start in range(0, order.size, 256):
            idx = order[start : start + 256]
            tensors = {
                REGISTRY_KEYS.X_KEY: torch.from_numpy(X[idx].toarray()),
                REGISTRY_KEYS.PROTEIN_KEY: Y[idx],
                REGISTRY_KEYS.TIME_KEY: codes_all[idx],
            }
            count += 1
            if variant == "plain GradNorm" and is_discriminator_step(count, hp["learning_step"]):
                with torch.no_grad():
                    z = module.inference(tensors[REGISTRY_KEYS.X_KEY])["z"]
                z = z.requires_grad_(requires_grad=True)
                logits = [module.discriminators[0](z)]
                codes = module.covariate_codes(tensors)
                loss, _ = discriminator_loss(logits, codes, z, gradient_penalty=hp["gradient_penalty"])
                opt_d.zero_grad()
                loss.backward()
                opt_d.step()
                continue
            _, _, out = module(tensors)
            terms = out.extra_metrics
            if variant == "plain one":
                opt.zero_grad()
                (terms["nlc"] + terms["mse"]).backward()
                opt.step()
                continue
            params = module.network_parameters()
            w = module.loss_weights
            step = gradnorm_step(
                [terms["nlc"], terms["fader"]],
                params,
                module.encoder.first_layer.weight,
                w,
                module.initial_losses,
                ratio_losses=[terms["nlc"], terms["mse"]],
                alpha=hp["gradnorm_alpha"],
            )
            for p, g in zip(params, step.gradients, strict=True):
                p.grad = g
            w.grad = step.weight_gradient
            opt.step()
            opt_w.step()
            renormalize_weights(w)
        times.append(time.perf_counter() - t_epoch)
    return {"epoch_s": float(np.median(times[1:])), "wall_s": time.perf_counter() - t0, "epochs": len(times)}


def _convergence(mdata, seed: int) -> dict:
    import scvi

    from crossmodalnet.model import CrossmodalNet

    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = seed
    t0 = time.perf_counter()
    model = CrossmodalNet(mdata, preset="paper")
    model.train(accelerator="cpu", enable_progress_bar=False)
    return {
        "epoch_s": float("nan"),
        "wall_s": time.perf_counter() - t0,
        "epochs": len(model.history["loss_train"]),
        "best_epoch": model.split_.get("best_epoch"),
    }


def _child(size: str, variant: str, epochs: int, seed: int, threads: int, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        mdata = _data(size, seed)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if variant == "convergence":
            row = _convergence(mdata, seed)
        elif variant.startswith("framework"):
            row = _framework(mdata, variant, epochs, seed)
        else:
            row = _plain(mdata, variant, epochs, seed)
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["rss_after_data_mb"] = rss0
        row["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - recorded in the table, the run goes on
        row = {"status": f"error: {type(err).__name__}: {err}"}
    queue.put(row)


def _run(size, variant, epochs, seed, threads, timeout) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(size, variant, epochs, seed, threads, queue))
    proc.start()
    try:
        row = queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        row = {"status": f"timeout after {timeout:g} s"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
    return row


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/scale")
    parser.add_argument("--sizes", default="D1,D2,D3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--convergence", default="", help="sizes that also train to convergence (default train())")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    rows = []
    jobs = [(s, v) for s in args.sizes.split(",") if s for v in args.variants.split(",") if v]
    jobs += [(s, "convergence") for s in args.convergence.split(",") if s]
    for size, variant in jobs:
        t = time.perf_counter()
        row = {
            "size": size,
            "variant": variant,
            **_run(size, variant, args.epochs, args.seed, args.threads, args.timeout),
        }
        row["process_s"] = time.perf_counter() - t
        row["load_1min"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)
        rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "scale_train.csv", index=False)
    import torch

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ""
    )
    lines = [
        "# CrossmodalNet training time (synthetic_cite, 3 time points, 50 proteins, batch 256)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, "
        f"{platform.python_version()}; 1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end.",
        f"Command: `python benchmarks/scale_train.py --sizes {args.sizes} --epochs {args.epochs} "
        f"--threads {args.threads} --convergence '{args.convergence}'`",
        "",
        "| size | variant | s / epoch | wall (s) | epochs | peak RSS (MB) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['variant']} | {r.get('epoch_s', float('nan')):.2f} | {r.get('wall_s', float('nan')):.1f} "
            f"| {r.get('epochs', '')} | {r.get('peak_rss_mb', float('nan')):.0f} | {r['status']} |"
        )
    (out / "scale_train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return df


if __name__ == "__main__":
    main()
