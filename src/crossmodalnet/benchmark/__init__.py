"""Benchmark harness: CrossmodalNet against baselines on generated and small real CITE-seq data.

Run it with ``crossmodalnet benchmark`` (see ``crossmodalnet benchmark --help``) or
:func:`run_benchmark`. Every method implements the :class:`Method` protocol
``fit(X_train, Y_train, X_val, Y_val, time_train, time_val)`` / ``predict(X, time)``.
"""

from ._data import (
    SETTINGS,
    SYNTHETIC_SIZES,
    BenchmarkData,
    load_dataset,
    load_synthetic,
    make_split,
    normalized_mudata,
    synthetic_benchmark_data,
)
from ._interpretability import coding_gene_rank
from ._methods import METHODS, Method, Split, make_method
from ._run import METRICS, BenchmarkConfig, run_benchmark

__all__ = [
    "METHODS",
    "METRICS",
    "SETTINGS",
    "SYNTHETIC_SIZES",
    "BenchmarkConfig",
    "BenchmarkData",
    "Method",
    "Split",
    "coding_gene_rank",
    "load_dataset",
    "load_synthetic",
    "make_method",
    "make_split",
    "normalized_mudata",
    "run_benchmark",
    "synthetic_benchmark_data",
]
