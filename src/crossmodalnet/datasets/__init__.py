"""Datasets: offline simulators with planted ground truth."""

from __future__ import annotations

from ._synthetic import synthetic_cite, synthetic_empty_droplets

__all__ = ["synthetic_cite", "synthetic_empty_droplets"]
