"""Export a training run's student: every check first, then one folder written atomically.

:func:`export_run` refuses (:class:`ExportError`, nothing written) a target folder that is not empty (unless
``overwrite``) or cannot be written, a run folder without a checkpoint, an architecture the format does not
cover, a tokenizer that does not fit the model, and a student with NaN or inf parameters. Then it writes into a temporary sibling folder
``.<name>.partial-*`` and renames it to the target only when every file is complete, so a crash or a full
disk never leaves a folder that looks like a finished export.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from flax import nnx

from jaxlens import models
from jaxlens.export import gguf as gguf_format
from jaxlens.export import hf as hf_format
from jaxlens.models.config import SUPPORTED_ARCHITECTURES
from jaxlens.run import checkpoints, model_sources

FORMATS = ("hf", "gguf")
DTYPES = ("float32", "bfloat16", "float16")
WRITERS = {"hf": hf_format.write_hf, "gguf": gguf_format.write_gguf_file}


class ExportError(ValueError):
  """An export that cannot be done; raised before anything is written."""


def check_target(out_dir: str, overwrite: bool) -> None:
  """Refuse a target that is a file, a non-empty folder (unless ``overwrite``), or under an unwritable folder.

  Raises:
    ExportError: naming the path and the reason.
  """
  path = os.path.abspath(out_dir)
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ExportError(f"{out_dir!r} exists and is not a folder")
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise ExportError(f"{out_dir!r} is not empty ({len(os.listdir(path))} entries); choose another folder or "
                      "pass overwrite=true")
  parent = os.path.dirname(path)
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ExportError(f"cannot write {out_dir!r}: {parent!r} is not a folder")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ExportError(f"cannot write {out_dir!r}: no write permission in {parent!r}")


def _check_architecture(info: checkpoints.RunInfo, fmt: str) -> models.ModelConfig:
  spec = info.run.get("student_model", {})
  family = spec.get("family")
  if family not in SUPPORTED_ARCHITECTURES:
    raise ExportError(f"{info.path}: unknown student architecture {family!r}; export supports "
                      f"{sorted(SUPPORTED_ARCHITECTURES)}")
  try:
    return models.ModelConfig(**spec)
  except (TypeError, ValueError) as e:
    raise ExportError(f"{info.path}: unreadable {family} student architecture: {e}") from None


def _check_format(cfg: models.ModelConfig, tokenizer: models.Tokenizer, fmt: str) -> None:
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ExportError(f"the run's tokenizer has {tokenizer.vocab_size} tokens, more than the student's "
                      f"vocabulary of {cfg.vocab_size}")
  if fmt == "gguf":
    try:
      gguf_format.check_gguf(cfg, tokenizer)
    except ValueError as e:
      raise ExportError(f"cannot export this {cfg.family} student as GGUF: {e}") from None


def _check_finite(student: models.CausalLM, info: checkpoints.RunInfo) -> None:
  flat = nnx.to_flat_state(nnx.state(student, nnx.Param))
  bad = [".".join(map(str, path)) for path, var in flat if not np.isfinite(np.asarray(var.get_value())).all()]
  if bad:
    raise ExportError(f"{info.path}: the student has NaN or inf parameters in {len(bad)} array(s) "
                      f"({', '.join(bad[:3])}); refusing to export it")


def _replace_folder(tmp: str, path: str) -> None:
  """Move the finished ``tmp`` to ``path``; an existing ``path`` is moved aside first and deleted last."""
  old = None
  if os.path.isdir(path):
    old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.old-")
    os.rename(path, os.path.join(old, "previous"))
  os.rename(tmp, path)
  if old is not None:
    shutil.rmtree(old)


def export_run(run_dir: str, out_dir: str, *, step: int | None = None, dtype: str = "float32", fmt: str = "hf",
               overwrite: bool = False) -> list[str]:
  """Write the student of ``run_dir``'s checkpoint (latest or ``step``) to ``out_dir`` as ``fmt``.

  Args:
    run_dir: a ``train.py`` run folder.
    out_dir: the folder to create (or an empty one; a non-empty one with ``overwrite``).
    step: a checkpoint step (default: the latest).
    dtype: stored tensor type: ``float32`` | ``bfloat16`` | ``float16`` (GGUF: norms stay F32).
    fmt: ``hf`` (a ``save_pretrained`` folder) or ``gguf`` (``out_dir/model.gguf``, Llama students only).
    overwrite: replace a non-empty ``out_dir``.

  Returns:
    the paths written.

  Raises:
    ExportError: on every refusal, before anything is written.
    OSError: if writing fails midway (the partial folder is removed; ``out_dir`` is untouched).
  """
  if fmt not in FORMATS:
    raise ExportError(f"format={fmt!r} is not one of {list(FORMATS)}")
  if dtype not in DTYPES:
    raise ExportError(f"dtype={dtype!r} is not one of {list(DTYPES)}")
  check_target(out_dir, overwrite)
  try:
    info = checkpoints.read_run(run_dir, step)
  except checkpoints.CheckpointError as e:
    raise ExportError(str(e)) from None
  cfg = _check_architecture(info, fmt)
  try:
    tokenizer = model_sources.load_run_tokenizer(info.config.data)
  except (FileNotFoundError, ValueError) as e:
    raise ExportError(f"the run's tokenizer {info.config.data.tokenizer!r} cannot be loaded: {e}") from None
  _check_format(cfg, tokenizer, fmt)
  try:
    student, _ = model_sources.load_run_student(run_dir, step=info.step)
  except checkpoints.CheckpointError as e:
    raise ExportError(str(e)) from None
  _check_finite(student, info)
  path = os.path.abspath(out_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.partial-")
  try:
    files = WRITERS[fmt](tmp, student, tokenizer, template=info.config.data.template, dtype=dtype)
    os.chmod(tmp, 0o755)
    _replace_folder(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return [os.path.join(out_dir, name) for name in files]
