"""Benchmark harness: CrossmodalNet against baselines on generated and small real CITE-seq data.

Run it with ``crossmodalnet benchmark`` (see ``crossmodalnet benchmark --help``) or
:func:`run_benchmark`. Data come from arguments only: generated sets by name, real sets from an explicit
``data_dir`` (``--data-dir``). The LightGBM baseline needs the ``benchmark`` extra
(``pip install 'crossmodalnet-tools[benchmark]'``). Every method implements the :class:`Method` protocol
``fit(X_train, Y_train, X_val, Y_val, time_train, time_val)`` / ``predict(X, time)``.
"""

from ._data import (
    REAL_DATASET_FOLDERS,
    REAL_DATASETS,
    SETTINGS,
    SYNTHETIC_SIZES,
    BenchmarkData,
    check_data_dir,
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
    "REAL_DATASETS",
    "REAL_DATASET_FOLDERS",
    "SETTINGS",
    "SYNTHETIC_SIZES",
    "BenchmarkConfig",
    "BenchmarkData",
    "Method",
    "Split",
    "check_data_dir",
    "coding_gene_rank",
    "load_dataset",
    "load_synthetic",
    "make_method",
    "make_split",
    "normalized_mudata",
    "run_benchmark",
    "synthetic_benchmark_data",
]
