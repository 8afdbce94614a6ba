"""``python train.py [PRESET ...] [key=value ...]``: distil a teacher into a student.

Examples::

  python train.py                                  # embedded default: SmolLM2-135M → 10-layer student, CPU
  python train.py tiny steps=6 out_dir=runs/tiny   # tiny random llama teacher/student (seconds)
  python train.py smollm2 fkl steps=200            # a baseline's loss (α = 0.5, forward KL) on the default models
  python train.py --help                           # every option with its default

Errors in the configuration exit with status 2 and one ``error:`` line; an unusable checkpoint with status 1.
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
  from jaxlens.train.trainer import train
  try:
    result = train(cfg)
  except tconfig.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report(result)
  return 0


def report(result) -> None:
  """Print where the results are and how the loss moved (process 0 only)."""
  import jax
  if jax.process_index() != 0:
    return
  status = "interrupted (SIGTERM) at" if result.interrupted else "finished at"
  print(f"\ntraining {status} step {result.step}")
  if result.first_loss is not None:
    print(f"  train loss: first logged {result.first_loss:.4f} -> last logged {result.last_loss:.4f}")
  if result.eval_losses:
    steps = sorted(result.eval_losses)
    print(f"  held-out loss: step {steps[0]} {result.eval_losses[steps[0]]:.4f} -> "
          f"step {steps[-1]} {result.eval_losses[steps[-1]]:.4f}")
  if len(result.eval_ce) > 1:
    steps = sorted(result.eval_ce)
    print(f"  held-out CE (nats/token): step {steps[0]} {result.eval_ce[steps[0]]:.4f} -> "
          f"step {steps[-1]} {result.eval_ce[steps[-1]]:.4f}")
  print(f"  checkpoint: {result.checkpoint}")
  print(f"  metrics:    {result.out_dir}/metrics.jsonl  (TensorBoard: {result.out_dir}/tensorboard)")
  print(f"  evaluate:   python eval.py students=init=baseline,student={result.out_dir} out={result.out_dir}/eval "
        "generation=false   (init: the student before training)")
