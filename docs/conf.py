# Configuration file for the Sphinx documentation builder.
#
# This file only contains a selection of the most common options. For a full
# list see the documentation:
# https://www.sphinx-doc.org/en/master/usage/configuration.html

# -- Path setup --------------------------------------------------------------
import logging
import os
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "extensions"))


# -- Project information -----------------------------------------------------

# NOTE: If you installed your project in editable mode, this might be stale.
#       If this is the case, reinstall it to refresh the metadata
try:
    info = metadata("crossmodalnet-tools")
except PackageNotFoundError:  # building from a source tree without `pip install -e .`
    project_name = "crossmodalnet-tools"
    author = "crossmodalnet developers"
    release = "0.0.0+unknown"
    repository_url = "https://github.com/crossmodalnet/crossmodalnet-tools"
else:
    project_name = info["Name"]
    author = info["Author"] or "crossmodalnet developers"
    release = info["Version"]  # the full version, including alpha/beta/rc tags
    urls = dict(pu.split(", ", 1) for pu in info.get_all("Project-URL") or [])
    repository_url = urls.get("Source", "https://github.com/crossmodalnet/crossmodalnet-tools")

project = project_name
copyright = f"{datetime.now():%Y}, {author}."
version = ".".join(release.split(".")[:2])  # the short X.Y version

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
templates_path = ["_templates"]
nitpicky = True  # Warn about broken links
needs_sphinx = "4.0"

html_context = {
    "display_github": True,  # Integrate GitHub
    "github_user": "crossmodalnet",  # Username
    "github_repo": project_name,  # Repo name
    "github_version": "main",  # Version
    "conf_py_path": "/docs/",  # Path in the checkout to the docs root
}

# -- General configuration ---------------------------------------------------

# Add any Sphinx extension module names here, as strings.
# They can be extensions coming with Sphinx (named 'sphinx.ext.*') or your custom ones.
extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinxcontrib.bibtex",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "IPython.sphinxext.ipython_console_highlighting",
    *[p.stem for p in (HERE / "extensions").glob("*.py")],
]

autosummary_generate = True
autodoc_member_order = "groupwise"
default_role = "literal"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True  # having a separate entry generally helps readability
napoleon_use_param = True
myst_heading_anchors = 6  # create anchors for h1-h6
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_url_schemes = ("http", "https", "mailto")
nb_output_stderr = "remove"
nb_execution_mode = "off"  # notebooks are committed with outputs; a separate CI workflow executes them
nb_merge_streams = True
typehints_defaults = "braces"

source_suffix = {
    ".rst": "restructuredtext",
    ".ipynb": "myst-nb",
    ".myst": "myst-nb",
}

# -- Intersphinx ---------------------------------------------------------------

# Each entry: name -> (docs URL, top-level modules documented there).
# The module names are only used for the offline mode below.
_INTERSPHINX = {
    "python": ("https://docs.python.org/3", sorted(sys.stdlib_module_names)),
    "numpy": ("https://numpy.org/doc/stable/", ["numpy"]),
    "pandas": ("https://pandas.pydata.org/docs/", ["pandas"]),
    "scipy": ("https://docs.scipy.org/doc/scipy/", ["scipy"]),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", ["anndata"]),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", ["mudata"]),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", ["scanpy"]),
    "muon": ("https://muon.readthedocs.io/en/latest/", ["muon"]),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", ["scvi"]),
    "torch": ("https://docs.pytorch.org/docs/stable/", ["torch"]),
    "lightning": ("https://lightning.ai/docs/pytorch/stable/", ["lightning"]),
    "matplotlib": ("https://matplotlib.org/stable/", ["matplotlib", "mpl_toolkits"]),
    "gseapy": ("https://gseapy.readthedocs.io/en/latest/", ["gseapy"]),
    "sklearn": ("https://scikit-learn.org/stable/", ["sklearn"]),
    "ray": ("https://docs.ray.io/en/latest/", ["ray"]),
    "dask": ("https://docs.dask.org/en/stable/", ["dask"]),
    "distributed": ("https://distributed.dask.org/en/stable/", ["distributed"]),
}

# Offline builds (no network, e.g. sandboxed CI): `CMN_DOCS_OFFLINE=1 hatch run docs:build`.
# Intersphinx is switched off, so no inventory is fetched (a failed fetch is a warning, and `-W`
# turns it into an error). Without inventories every reference to an external object would be
# a nitpicky "reference target not found" warning, so references into the modules listed above
# are ignored instead. References into `crossmodalnet` itself are still checked. The online build
# (Read the Docs) keeps the full check.
DOCS_OFFLINE = os.environ.get("CMN_DOCS_OFFLINE", "").lower() in {"1", "true", "yes", "on"}

if DOCS_OFFLINE:
    intersphinx_mapping = {}
    _external = sorted({mod for _, mods in _INTERSPHINX.values() for mod in mods})
    _external_re = rf"({'|'.join(_external)})(\..+)?"
    nitpick_ignore_regex = [(r"py:.*", _external_re)]
else:
    intersphinx_mapping = {name: (url, None) for name, (url, _) in _INTERSPHINX.items()}
    nitpick_ignore_regex = []

# sphinx-autodoc-typehints links an annotation by its defining module (`pandas.core.frame.DataFrame`),
# but the inventories list the public path (`pandas.DataFrame`). Rewrite those targets before
# intersphinx looks them up (the same idea as scanpydoc's `qualname_overrides`).
qualname_overrides = {
    "anndata._core.anndata.AnnData": "anndata.AnnData",
    "mudata._core.mudata.MuData": "mudata.MuData",
    "pandas.core.frame.DataFrame": "pandas.DataFrame",
    "pandas.core.series.Series": "pandas.Series",
    "pandas.core.indexes.base.Index": "pandas.Index",
    "numpy.random._generator.Generator": "numpy.random.Generator",
    "scipy.sparse._csr.csr_matrix": "scipy.sparse.csr_matrix",
    "scvi.data._manager.AnnDataManager": "scvi.data.AnnDataManager",
    "lightning.pytorch.core.datamodule.LightningDataModule": "lightning.pytorch.core.LightningDataModule",
    "matplotlib.axes._axes.Axes": "matplotlib.axes.Axes",
}

# List of patterns, relative to source directory, that match files and
# directories to ignore when looking for source files.
# This pattern also affects html_static_path and html_extra_path.
# generated_tables/: Markdown tables rendered from benchmarks/results/*.csv by benchmarks/make_tables.py,
# pulled into the pages with MyST's {include}; they are not pages themselves.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "generated_tables"]


# -- Options for HTML output -------------------------------------------------

# The theme to use for HTML and HTML Help pages.  See the documentation for
# a list of builtin themes.
#
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["css/custom.css"]
html_title = project_name

html_theme_options = {
    "repository_url": repository_url,
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}

pygments_style = "default"

nitpick_ignore = [
    # If building the documentation fails because of a missing link that is outside your control,
    # you can add an exception to this list.
    #     ("py:class", "igraph.Graph"),
    # Inherited from scvi's BaseModelClass; private in scvi-tools and absent from its inventory.
    ("py:class", "scvi.utils._attrdict.attrdict"),
    # scvi-tools >= 1.5's inherited `setup_annbatch` docstring names annbatch, which the package does not use.
    ("py:class", "annbatch.DatasetCollection"),
    ("py:class", "annbatch.Loader"),
    ("py:meth", "annbatch.DatasetCollection.add_adatas"),
    # Lightning's WeightAveraging (inherited by `crossmodalnet.train.AveragedWeights`) names torch's class bare.
    ("py:class", "AveragedModel"),
    # The torch module behind the model is not part of the documented API (users reach it as
    # ``model.module``); functions that take it name it in their signatures.
    ("py:class", "crossmodalnet.module._module.CrossmodalModule"),
    ("py:class", "crossmodalnet.module.CrossmodalModule"),
]

# `tutorials/index.md` globs `*`, which matches nothing until the first notebook lands.
suppress_warnings = ["toc.empty_glob"]


class _EmptyGlobFilter(logging.Filter):
    """Drop the "toctree glob pattern didn't match any documents" warning.

    Sphinx emits it with ``subtype="empty_glob"`` but no ``type``, so ``suppress_warnings``
    above cannot match it (https://github.com/sphinx-doc/sphinx/issues/14625).
    Remove this filter once a Sphinx release with the fix is the minimum.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "subtype", None) != "empty_glob"


def _override_qualname(app, env, node, contnode):
    """Point a private-module target at its public path; resolution continues with intersphinx."""
    target = node.get("reftarget")
    if target in qualname_overrides:
        node["reftarget"] = qualname_overrides[target]
    return None


def setup(app):
    """App setup hook."""
    app.connect("missing-reference", _override_qualname, priority=100)  # before intersphinx (500)
    # sphinx.util.logging.getLogger(__name__) logs to "sphinx." + __name__
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_EmptyGlobFilter())


# The benchmark harness's dataclasses are internal plumbing of `run_benchmark`, not documented API.
nitpick_ignore += [
    ("py:class", "crossmodalnet.benchmark._data.BenchmarkData"),
    ("py:class", "crossmodalnet.benchmark._methods.Method"),
    ("py:class", "crossmodalnet.benchmark._methods.Split"),
    ("py:class", "Method"),
]
