"""Evaluate distilled students against their teacher (thin wrapper over :mod:`jaxlens.eval.cli`).

  python eval.py students=init=baseline,distilllens=runs/smollm2 out=runs/smollm2/eval
  python eval.py students=fkl=runs/fkl,rkl=runs/rkl sbert=true out=runs/eval
  python eval.py students=s=runs/smollm2 benchmark=dolly=data/dolly.jsonl   # your instruction sets (docs/eval.md)
  python eval.py --help                      # every key=value option with its type, default and meaning

A student is a ``train.py`` run folder, ``baseline`` (the untrained student of the runs' config) or, with
``benchmark=``, ``hf:FOLDER`` (an exported Hugging Face folder).
"""

import sys

from jaxlens.eval.cli import main

if __name__ == "__main__":
  sys.exit(main())
