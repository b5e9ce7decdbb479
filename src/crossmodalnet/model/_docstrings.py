"""Parameter text shared by the model's getters, added to the package's docrep processor.

Use ``%(query_mdata)s``, ``%(forward_batch_size)s`` and ``%(allow_extrapolation)s`` in a docstring
decorated with ``@docs.dedent`` (:mod:`crossmodalnet._docs`).
"""

from __future__ import annotations

from crossmodalnet._docs import docs

docs.params.update(
    query_mdata="""\
mdata
    MuData whose RNA modality has the model's genes (same names and order); defaults to the
    registered MuData. A protein modality is not needed.""",
    forward_batch_size="""\
batch_size
    Cells per forward pass; memory is bounded by it.""",
    allow_extrapolation="""\
allow_extrapolation
    Allow numeric time points outside the trained range (linear extrapolation).""",
)

__all__ = ["docs"]
