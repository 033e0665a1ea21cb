"""Export a run: SavedModel for TensorFlow Serving, TFLite for devices, ``export.json``.

Example:
    >>> from tfgpt.export import export_run
    >>> info = export_run("runs/shakespeare", "export/shakespeare", verify=True)  # doctest: +SKIP
"""

from tfgpt.export.export import EXPORT_JSON, FORMATS, export_run

__all__ = ["EXPORT_JSON", "FORMATS", "export_run"]
