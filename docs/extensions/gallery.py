"""The index page's gallery: figures taken from the committed tutorial outputs at build time.

A code cell of a tutorial notebook tagged ``gallery-<name>`` gives its first PNG output to
``docs/_gallery/<name>.png`` (not committed), which ``index.md`` shows and links to the tutorial. The
notebooks are committed with their outputs (``nb_execution_mode = "off"``), so the gallery always shows
what the tutorials show, and no image is committed twice. A tag without a PNG output, or a figure that
``index.md`` names but no notebook tags, is a build warning (an error under ``-W``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

TAG_PREFIX = "gallery-"
OUT_DIR = "_gallery"


def gallery_figures(tutorials: Path) -> dict[str, bytes]:
    """PNG bytes of every tagged cell's first image output, by gallery name."""
    figures: dict[str, bytes] = {}
    for path in sorted(tutorials.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            for tag in cell.get("metadata", {}).get("tags", []):
                if not tag.startswith(TAG_PREFIX):
                    continue
                name = tag[len(TAG_PREFIX) :]
                png = next(
                    (o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})),
                    None,
                )
                if png is None:
                    logger.warning("gallery: cell tagged %r in %s has no PNG output", tag, path.name)
                    continue
                figures[name] = base64.b64decode("".join(png) if isinstance(png, list) else png)
    return figures


def _write_gallery(app) -> None:
    src = Path(app.srcdir)
    out = src / OUT_DIR
    out.mkdir(exist_ok=True)
    figures = gallery_figures(src / "tutorials")
    for name, data in figures.items():
        target = out / f"{name}.png"
        if not target.exists() or target.read_bytes() != data:  # unchanged files keep their mtime: no rebuild
            target.write_bytes(data)
    index = src / "index.md"
    if index.exists():
        text = index.read_text(encoding="utf-8")
        for name in sorted({p.split(".png")[0] for p in text.split(f"{OUT_DIR}/")[1:]}):
            if name not in figures:
                logger.warning(
                    "gallery: index.md shows %s/%s.png, but no tutorial cell is tagged %s%s",
                    OUT_DIR,
                    name,
                    TAG_PREFIX,
                    name,
                )


def setup(app):
    """Extract the gallery figures before the sources are read."""
    app.connect("builder-inited", _write_gallery)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
