"""Distil a teacher LM into a student, at the output and through the logit lens (thin wrapper).

  python train.py                          # embedded default: SmolLM2-135M-Instruct → 10-layer student on CPU
  python train.py tiny steps=6             # tiny random models (CI smoke)
  python train.py --help                   # every option, its default and meaning

See ``docs/training.md`` and ``jaxlens/train/cli.py``.
"""

import sys

from jaxlens.train.cli import main

if __name__ == "__main__":
  if sys.argv[1:2] == ["--plan"]:  # python train.py --plan TOPOLOGY [PRESET ...] [key=value ...]
    from jaxlens.train.plan import main as plan_main
    sys.exit(plan_main(sys.argv[2:]))
  sys.exit(main())
