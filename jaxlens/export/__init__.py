"""A trained student outside jaxlens: Hugging Face ``save_pretrained`` folders and GGUF files.

Reads a run folder (:mod:`jaxlens.run`) and writes model formats through the models' own weight tables
(:func:`jaxlens.models.to_state_dict`, :func:`jaxlens.models.gguf.write_gguf`); never imports ``train`` or ``eval``.
"""

from jaxlens.export.core import DTYPES, FORMATS, ExportError, export_run

__all__ = ["DTYPES", "FORMATS", "ExportError", "export_run"]
