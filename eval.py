"""Evaluate distilled students against their teacher (thin wrapper over :mod:`jaxlens.eval.cli`).

  python eval.py students=init=baseline,distilllens=runs/smollm2 out=runs/smollm2/eval
  python eval.py students=fkl=runs/fkl,rkl=runs/rkl sbert=true out=runs/eval
  python eval.py --help                      # every key=value option with its default

A student is a ``train.py`` run folder (or ``baseline``: the untrained student of the runs' config).
"""

import sys

from jaxlens.eval.cli import main

if __name__ == "__main__":
  sys.exit(main())
