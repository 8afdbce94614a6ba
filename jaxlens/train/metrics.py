"""Training logs: ``<out_dir>/metrics.jsonl``, TensorBoard summaries and a tqdm progress bar, process 0 only.

Every record is one JSON object ``{"step": int, "time": seconds since start, <namespaced key>: float, …}``
with keys ``loss/total``, ``loss/ce``, ``loss/output``, ``loss/lens``, ``loss/mse``, ``lens/pair_<i>``, ``lr``,
``grad_norm``, ``tokens`` (response tokens of the step), ``tokens_per_s`` (non-padding tokens per second
over the logging window), ``ms_per_step``, and for held-out evaluations ``eval/loss/total``,
``eval/lens/pair_<i>``, ….
The same scalars go to TensorBoard (``<out_dir>/tensorboard``) under the same tags.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import tqdm


class MetricsLogger:
  """Append-only metric sink; a no-op on processes other than 0 (``enabled=False``).

  Args:
    out_dir: the run folder.
    total_steps: for the progress bar.
    start_step: the step the run (re)starts at; records of later steps (from a killed run) are dropped.
    enabled: write anything at all (process 0).
    progress: draw the tqdm bar.
  """

  def __init__(self, out_dir: str, *, total_steps: int, start_step: int = 0, enabled: bool = True,
               progress: bool = True):
    self.enabled = enabled
    self.path = os.path.join(out_dir, "metrics.jsonl")
    self._t0 = time.time()
    self._file = self._writer = self._bar = None
    self._bar_args = dict(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)
    self._progress = enabled and progress
    if not enabled:
      return
    os.makedirs(out_dir, exist_ok=True)
    self._drop_records_after(start_step)
    self._file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self._writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))

  def _drop_records_after(self, step: int) -> None:
    """On resume, forget records of steps after the checkpoint (a killed run logged them; they are redone), and
    drop unreadable lines (a torn last line of a killed run) with a notice naming them."""
    if not os.path.exists(self.path):
      return
    kept, torn = [], []
    with open(self.path) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          torn.append(number)
          continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
    if torn:
      self.write(f"note: {self.path}: dropped {len(torn)} unreadable line(s) (line {', '.join(map(str, torn[:5]))}; "
                 "a write cut short by a killed run)")
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def log(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> dict:
    """Write one record (JSONL line + TensorBoard scalars); returns it. Non-finite values are written as null."""
    record = {"step": int(step), "time": round(time.time() - self._t0, 3)}
    record.update({f"{prefix}{k}": _finite_or_none(float(v)) for k, v in metrics.items()})
    if self.enabled:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
      for key, value in record.items():
        if key not in ("step", "time") and value is not None:
          self._writer.add_scalar(key, value, step)
      self._writer.flush()
    return record

  def progress(self, step: int, postfix: Mapping[str, float] | None = None) -> None:
    """Move the progress bar (created at the first call) to ``step``, showing ``postfix`` (e.g. loss, tokens/s)."""
    if self._progress and self._bar is None:
      self._bar = tqdm.tqdm(**self._bar_args)
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
      self._bar.update(step - self._bar.n)

  def write(self, message: str) -> None:
    """Print a line (above the progress bar) on process 0."""
    if self.enabled:
      (self._bar.write if self._bar is not None else print)(message)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.close()
    if self._file is not None:
      self._file.close()


def format_value(value: float | None) -> str:
  """A logged value (None where it was not finite) as ``1.2345`` or ``nan``."""
  return "nan" if value is None else f"{value:.4f}"


def _finite_or_none(x: float) -> float | None:
  return x if math.isfinite(x) else None
