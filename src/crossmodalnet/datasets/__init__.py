"""Datasets: offline simulators with planted ground truth and a small embedded real CITE-seq set."""

from __future__ import annotations

from ._bmmc import bmmc_cite
from ._synthetic import synthetic_cite, synthetic_empty_droplets

__all__ = ["bmmc_cite", "synthetic_cite", "synthetic_empty_droplets"]
