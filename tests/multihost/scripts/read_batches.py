"""Launched once per process: print (as JSON lines) the rows this process feeds for the first global batches.

``python read_batches.py NUM_BATCHES PRESET [key=value ...]``: builds the training data exactly as ``train.py``
does (:func:`jaxlens.train.trainer.build_data`) and prints one line per batch with this process's index and
its rows' token ids.
"""

import json
import sys

import jax

from jaxlens.parallel import distributed
from jaxlens.run import config as tconfig
from jaxlens.train.trainer import build_data

distributed.initialize()
num_batches, argv = int(sys.argv[1]), sys.argv[2:]
cfg = tconfig.resolve(argv)
train_iter, _, _ = build_data(cfg, vocab_size=cfg.teacher.vocab_size)
for index in range(num_batches):
  batch = next(train_iter)
  print(json.dumps({"process": jax.process_index(), "batch": index, "rows": batch["input_ids"].tolist()}), flush=True)
