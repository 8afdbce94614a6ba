"""``python train.py [PRESET ...] [key=value ...]``: distil a teacher into a student.

Examples::

  python train.py                                  # embedded default: SmolLM2-135M → 10-layer student, CPU
  python train.py tiny steps=6 out_dir=runs/tiny   # tiny random llama teacher/student (seconds)
  python train.py smollm2 fkl steps=200            # a baseline's loss (α = 0.5, forward KL) on the default models
  python train.py --help                           # every option with its default

Every user-input problem (configuration, data file, ``out_dir``, layer map, mesh, a resume on changed config or
data) exits with status 2 and one ``error:`` line, before any work; a run with no usable checkpoint or one that
diverged exits with status 1 and one ``error:`` line. SIGTERM or Ctrl-C saves a checkpoint and exits 0; a
second Ctrl-C exits at once (status 130).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jaxlens.run.checkpoints import CheckpointError
from jaxlens.run import config as tconfig


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``python train.py`` / ``jaxlens-train``; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "help") for a in argv):
    print(__doc__)
    print(tconfig.help_text())
    return 0
  try:
    cfg = tconfig.resolve(argv)
  except tconfig.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from jaxlens.train.trainer import DivergedError
  from jaxlens.train.trainer import train
  try:
    result = train(cfg)
  except tconfig.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (CheckpointError, DivergedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("error: interrupted (Ctrl-C): stopped at once, nothing saved since the last checkpoint", file=sys.stderr)
    return 130
  report(result)
  return 0


def report(result) -> None:
  """Print where the results are and how the loss moved (process 0 only)."""
  import jax
  if jax.process_index() != 0:
    return
  status = f"interrupted ({result.stop_reason}) at" if result.interrupted else "finished at"
  print(f"\ntraining {status} step {result.step}")
  from jaxlens.train.metrics import format_value as fmt
  if result.first_loss is not None or result.last_loss is not None:
    print(f"  train loss: first logged {fmt(result.first_loss)} -> last logged {fmt(result.last_loss)}")
  if result.eval_losses:
    steps = sorted(result.eval_losses)
    print(f"  held-out loss: step {steps[0]} {fmt(result.eval_losses[steps[0]])} -> "
          f"step {steps[-1]} {fmt(result.eval_losses[steps[-1]])}")
  if len(result.eval_ce) > 1:
    steps = sorted(result.eval_ce)
    print(f"  held-out CE (nats/token): step {steps[0]} {fmt(result.eval_ce[steps[0]])} -> "
          f"step {steps[-1]} {fmt(result.eval_ce[steps[-1]])}")
  print(f"  checkpoint: {result.checkpoint}")
  print(f"  metrics:    {result.out_dir}/metrics.jsonl  (TensorBoard: {result.out_dir}/tensorboard)")
  print(f"  evaluate:   python eval.py students=init=baseline,student={result.out_dir} out={result.out_dir}/eval "
        "generation=false   (init: the student before training)")
