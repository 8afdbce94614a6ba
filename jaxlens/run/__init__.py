"""The run folder: the contract that training writes and evaluation reads.

- :mod:`jaxlens.run.config` — the typed training configuration (``TrainConfig``), its presets and the one
  ``key=value`` parser (with ``--help``) that every command line of jaxlens uses;
- :mod:`jaxlens.run.checkpoints` — the on-disk checkpoint format (orbax items, run facts);
- :mod:`jaxlens.run.model_sources` — where a run's teacher and student come from, and how a run folder's
  models are rebuilt.

Imports: ``losses``, ``models``, ``data`` (never ``train`` or ``eval``).
"""
