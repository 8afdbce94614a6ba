"""Evaluate distilled students against their teacher (thin wrapper over :mod:`jaxlens.eval.cli`).

  python eval.py students=baseline=baseline out=runs/eval_baseline
  python eval.py students=fkl=runs/fkl,distilllens=runs/distilllens sbert=true out=runs/eval

See ``jaxlens/eval/cli.py`` for every ``key=value`` option.
"""

import sys

from jaxlens.eval.cli import main

if __name__ == "__main__":
  sys.exit(main())
