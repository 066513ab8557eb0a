"""Jupyter widgets over the catalog: the LoRA gallery, and helpers for the dashboard notebook.

>>> from lorabench.catalog import Catalog
>>> from lorabench.widgets import Gallery
>>> gallery = Gallery(Catalog(), "base:sdxl rating:>=4")
>>> gallery                                  # display it in JupyterLab, Notebook 7 or Voila
>>> gallery.selected                         # the ids selected in the grid

The front-end code is ``static/gallery.js`` and ``static/gallery.css`` beside this package:
self-contained ES modules, loaded by anywidget, that build the page with ``textContent`` only.
"""

from lorabench.widgets._dashboard import dashboard_catalog, show_stats
from lorabench.widgets._gallery import FACETS, SORTS, Gallery
from lorabench.widgets._thumbnails import Thumbnail, ThumbnailCache

__all__ = ["FACETS", "SORTS", "Gallery", "Thumbnail", "ThumbnailCache", "dashboard_catalog", "show_stats"]
