"""Shared parameter text for docstrings, substituted with docrep (the mechanism scvi-tools uses).

Decorate a function with ``@docs.dedent`` and write ``%(mdata)s``, ``%(key_added)s`` ... in its
docstring, at the indentation of the other parameters. ``tests/test_package_structure.py`` fails
on any placeholder left unrendered. This module imports neither torch nor scvi-tools, so
:mod:`crossmodalnet.pp` and :mod:`crossmodalnet.pl` can use it.
"""

from __future__ import annotations

from docrep import DocstringProcessor

_mdata = """\
mdata
    MuData; results are written into it (see Returns)."""

_mdata_query = """\
mdata
    MuData whose RNA modality holds expression on the scale the model was trained on (e.g.
    log-normalised with :func:`crossmodalnet.pp.log_normalize`), in the layer the model was
    registered with. A protein modality is not needed. If its genes differ from the model's
    (other order, extra or missing genes), they are matched as in
    :func:`crossmodalnet.pp.harmonize_genes` on a temporary object and the coverage is recorded;
    the input's RNA modality itself is never changed."""

_mdata_plot = """\
mdata
    MuData holding the results of the matching :mod:`crossmodalnet.tl` function."""

_model = """\
model
    A trained :class:`~crossmodalnet.model.CrossmodalNet`."""

_rna_key = """\
rna_key
    Name of the RNA modality in ``mdata``."""

_protein_key = """\
protein_key
    Name of the protein modality in ``mdata``."""

_key_added = """\
key_added
    Name of the result; every slot written (see Returns) is derived from it."""

_copy = """\
copy
    Work on a copy of ``mdata`` and return it, leaving the input untouched; otherwise write
    in place and return ``None``."""

_batch_size = """\
batch_size
    Cells per forward pass; memory grows with it."""

_rng = """\
rng
    Seed, :class:`numpy.random.Generator` or ``None`` (fresh entropy)."""

_train_mask = """\
train_mask
    Training cells: a boolean array aligned with ``mdata.obs_names`` or the name of a boolean
    column of ``mdata.obs``. Statistics shared across cells are fitted on these cells only and
    then applied to every cell, so validation, test and query cells never influence the values
    of the training cells. ``None`` fits on all cells."""

_harmonize = """\
gene_id_column
    Match genes by this column of ``mdata[rna_key].var`` (e.g. ``"gene_ids"`` with Ensembl IDs)
    instead of by ``var_names``. The model's IDs come from ``model_gene_ids`` or, if that is
    ``None``, from the same column (or ``"gene_ids"``) of the MuData the model was trained on.
    Ensembl version suffixes (``.12``) are ignored.
model_gene_ids
    IDs of the model's genes, aligned with ``model.gene_names``; needed with ``gene_id_column``
    when the model was loaded without its training data.
min_coverage
    Smallest accepted fraction of the model's genes found in ``mdata[rna_key]``; below it a
    :class:`ValueError` is raised. Missing genes are filled with zeros (not expressed) and a
    :class:`UserWarning` says how many. A model gene that appears more than once in the query
    (by name or ID) raises a :class:`ValueError`: which column to use is ambiguous."""

_proteins = """\
proteins
    Protein name or names to use; all by default."""

_plot_tail = """\
ax
    Axes to draw into; a new figure is made if ``None``. Multi-panel plots need a single panel
    when ``ax`` is given.
show
    Show the figure; by default it is shown unless ``ax`` is given or ``return_fig=True``.
save
    Path to save the figure to; the extension picks the format (``.png``, ``.pdf``, ``.svg`` ...).
return_fig
    Return the :class:`~matplotlib.figure.Figure` instead of showing it."""

_prediction_keys = """\
key
    ``key_added`` of :func:`crossmodalnet.tl.predict_protein`.
protein_key
    Modality of the observed proteins; defaults to the one recorded by
    :func:`crossmodalnet.tl.predict_protein`."""

_saliency_settings = """\
time
    Evaluate every cell at this time point instead of its own.
n_steps
    Riemann steps of integrated gradients.
n_samples
    Noisy copies of each cell for SmoothGrad.
noise_scale
    Standard deviation of SmoothGrad's noise, in units of each gene's standard deviation over the
    training cells.
random_state
    Seed of SmoothGrad's noise. The same seed, cells and ``batch_size`` give the same scores on CPU."""

_plot_returns = """\
:class:`~matplotlib.figure.Figure` if ``return_fig=True``, else ``None``."""

docs = DocstringProcessor(
    mdata=_mdata,
    mdata_query=_mdata_query,
    mdata_plot=_mdata_plot,
    model=_model,
    rna_key=_rna_key,
    protein_key=_protein_key,
    key_added=_key_added,
    copy=_copy,
    batch_size=_batch_size,
    rng=_rng,
    train_mask=_train_mask,
    harmonize=_harmonize,
    proteins=_proteins,
    plot_tail=_plot_tail,
    plot_returns=_plot_returns,
    prediction_keys=_prediction_keys,
    saliency_settings=_saliency_settings,
)
"""The package's :class:`docrep.DocstringProcessor`; decorate with ``@docs.dedent``."""
