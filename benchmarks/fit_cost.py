"""Fit time of the default model against the paper preset, back to back in one process.

The accuracy issue bounds the default's cost: on synthetic D1 it must train in at most twice the time of
the paper preset (the default of the time) on the same machine. Load on a shared machine moves single
timings by a factor of two, so the variants are fitted in turn, repeat after repeat, in one process and
at one torch thread, and the ratio is taken within each repeat::

    python benchmarks/fit_cost.py --out results/fit_cost --repeats 4

writes ``fit_cost.csv`` (one row per variant and repeat: fit seconds, restored epoch, the 1-minute load
average before the fit) and ``summary.md`` (each repeat's default / paper ratio and their mean).
Variants: ``paper`` (``preset="paper"``), ``default`` and ``default_no_phase``
(``disentangle_epochs=0``), through ``fit_crossmodalnet`` of ``benchmarks/levers.py`` on the harness split.
``--state-weight W`` adds ``default_state``, the default with the phase's cell-state term at weight ``W``
(``disentangle_kwargs={"state_weight": W}``; the default has 10, so ``--state-weight 0`` times the default
without the term), and its ratio to the paper preset.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS: dict[str, tuple[dict, dict]] = {
    "paper": ({"preset": "paper"}, {}),
    "default": ({}, {}),
    "default_no_phase": ({}, {"disentangle_epochs": 0}),
}


def variants(state_weight: float | None = None) -> dict[str, tuple[dict, dict]]:
    """The variants to time: :data:`VARIANTS`, plus ``default_state`` when ``state_weight`` is given."""
    if state_weight is None:
        return dict(VARIANTS)
    return {**VARIANTS, "default_state": ({}, {"disentangle_kwargs": {"state_weight": state_weight}})}


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Fit every variant ``args.repeats`` times in turn; write and return the timings.

    Parameters
    ----------
    args
        Parsed command-line arguments (``out``, ``data``, ``seed``, ``repeats``, ``max_epochs``, ``data_dir``,
        optionally ``state_weight``).

    Returns
    -------
    pandas.DataFrame
        One row per repeat and variant: ``repeat``, ``variant``, ``fit_seconds``, ``best_epoch``, ``load_1min``.
    """
    import torch
    from levers import fit_crossmodalnet

    from crossmodalnet.benchmark import Split, load_dataset, make_split

    torch.set_num_threads(1)
    data = load_dataset(args.data, seed=args.seed, data_dir=args.data_dir)
    train, val, test = make_split(data, "in_distribution", seed=args.seed)
    split = Split("in_distribution", args.seed, train, val, test)
    rows = []
    for repeat in range(args.repeats):
        for name, (model_kwargs, train_kwargs) in variants(getattr(args, "state_weight", None)).items():
            load = os.getloadavg()[0]
            _, fit_s, best = fit_crossmodalnet(
                data,
                split,
                model_seed=args.seed,
                model_kwargs=model_kwargs,
                train_kwargs=train_kwargs,
                max_epochs=args.max_epochs,
            )
            rows.append(
                {"repeat": repeat, "variant": name, "fit_seconds": fit_s, "best_epoch": best, "load_1min": load}
            )
            print(f"repeat {repeat} {name}: {fit_s:.1f} s (load {load:.1f})", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "fit_cost.csv", index=False)
    (out / "summary.md").write_text(summarise(df, args))
    return df


def summarise(df: pd.DataFrame, args: argparse.Namespace) -> str:
    """Markdown: fit seconds of each variant per repeat and the default / paper ratio within each repeat."""
    wide = df.pivot(index="repeat", columns="variant", values="fit_seconds")
    ratio = wide["default"] / wide["paper"]
    lines = [
        f"Data {args.data}, seed {args.seed}, in-distribution split, one torch thread, {args.repeats} repeat(s).",
        "",
        "| repeat | paper (s) | default (s) | default without phase (s) | default / paper | load (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    load = df.groupby("repeat")["load_1min"].mean()
    for r in wide.index:
        lines.append(
            f"| {r} | {wide.loc[r, 'paper']:.1f} | {wide.loc[r, 'default']:.1f} | "
            f"{wide.loc[r, 'default_no_phase']:.1f} | {ratio[r]:.2f} | {load[r]:.1f} |"
        )
    lines += ["", f"Mean default / paper ratio: {ratio.mean():.2f} (range {ratio.min():.2f} to {ratio.max():.2f})."]
    if "default_state" in wide:
        state = wide["default_state"] / wide["paper"]
        lines += [
            "",
            f"Default with state_weight={args.state_weight:g} (s) per repeat: "
            + ", ".join(f"{v:.1f}" for v in wide["default_state"])
            + f"; mean ratio to the paper preset {state.mean():.2f} (range {state.min():.2f} to {state.max():.2f}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/fit_cost")
    parser.add_argument("--data", default="synthetic:D1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--state-weight",
        type=float,
        default=None,
        help="also time the default with this weight of the cell-state term (0: without it)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    df = run(args)
    print(summarise(df, args))


if __name__ == "__main__":
    main()
