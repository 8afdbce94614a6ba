"""``python -m jaxlens.export RUN_DIR OUT_DIR [key=value ...]`` (also ``jaxlens-export``): a run's student for other runtimes.

Examples::

  python -m jaxlens.export runs/smollm2 exports/smollm2-student                 # HF folder, float32
  python -m jaxlens.export runs/smollm2 exports/student-bf16 dtype=bfloat16
  python -m jaxlens.export runs/smollm2 exports/student-gguf format=gguf dtype=float16   # model.gguf
  python -m jaxlens.export runs/smollm2 exports/step200 step=200 overwrite=true

Every refusal (no checkpoint, an unknown architecture, a non-empty OUT_DIR without overwrite=true, an unwritable
path, NaN or inf parameters, a bad option) prints one ``error:`` line and exits with status 2 before anything is
written; the export appears only when complete (written to a hidden sibling folder, then renamed).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from jaxlens.run import config as rconfig
from jaxlens.run.config import opt

COMMAND = "python -m jaxlens.export"
USAGE = f"usage: {COMMAND} RUN_DIR OUT_DIR [key=value ...]"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Export settings; every field can be set as ``key=value`` after the two folders."""

  step: int = opt(-1, "checkpoint step to export (-1 = the latest)")
  format: str = opt("hf", "hf (a save_pretrained folder: config.json, model.safetensors, tokenizer) | gguf "
                    "(OUT_DIR/model.gguf, Llama students)")
  dtype: str = opt("float32", "stored tensor type: float32 | bfloat16 | float16 (GGUF norms stay float32)")
  overwrite: bool = opt(False, "replace a non-empty OUT_DIR (atomically, once the new export is complete)")

  def validate(self) -> ExportConfig:
    from jaxlens.export.core import DTYPES, FORMATS
    if self.format not in FORMATS:
      raise rconfig.ConfigError(f"format={self.format!r} is not one of {list(FORMATS)}")
    if self.dtype not in DTYPES:
      raise rconfig.ConfigError(f"dtype={self.dtype!r} is not one of {list(DTYPES)}")
    if self.step < -1:
      raise rconfig.ConfigError(f"step must be >= 0 or -1 (the latest), got {self.step}")
    return self


def parse_args(argv: Sequence[str]) -> tuple[str, str, ExportConfig]:
  """``RUN_DIR OUT_DIR key=value …`` → ``(run_dir, out_dir, config)``.

  Raises:
    jaxlens.run.config.ConfigError: on a missing folder argument, an unknown key (with close matches) or a bad value.
  """
  folders = [a for a in argv if "=" not in a]
  if len(folders) != 2:
    raise rconfig.ConfigError(f"expected RUN_DIR and OUT_DIR, got {folders}; {USAGE}")
  values = rconfig.parse_overrides([a for a in argv if "=" in a])
  return folders[0], folders[1], rconfig.build_config(ExportConfig, values, where="export options", command=COMMAND)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``python -m jaxlens.export`` / ``jaxlens-export``; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "help") for a in argv):
    print(__doc__)
    print(rconfig.help_text(ExportConfig, USAGE, top_group="export"))
    return 0
  from jaxlens.export.core import ExportError, export_run
  try:
    run_dir, out_dir, cfg = parse_args(argv)
    files = export_run(run_dir, out_dir, step=None if cfg.step < 0 else cfg.step, dtype=cfg.dtype, fmt=cfg.format,
                       overwrite=cfg.overwrite)
  except (rconfig.ConfigError, ExportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"error: writing the export failed, nothing was exported: {e}", file=sys.stderr)
    return 1
  print(f"exported {len(files)} files to {out_dir}:")
  for path in files:
    print(f"  {path}")
  return 0
