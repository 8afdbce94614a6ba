"""Held-out cross-entropy of candidate student initialisations (teacher blocks kept), before any training.

  python experiments/student_inits.py                       # SmolLM2 teacher, chatterbot held-out split
  python experiments/student_inits.py --out docs/results/smollm2-cpu/inits.json

A student made of a subset of the teacher's blocks (:func:`jaxlens.models.student_from_teacher`) is only a
useful starting point if its next-token distribution is already far better than uniform (CE < ln V). This
scores each candidate block list, and the teacher, on the first ``--sequences`` held-out sequences of the
default data configuration (token mean of −log q(y) over response tokens, 95% bootstrap CI over sequences).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxlens import losses, models  # noqa: E402
from jaxlens.eval import loading  # noqa: E402
from jaxlens.run import config as tconfig  # noqa: E402
from jaxlens.run import model_sources  # noqa: E402

#: name -> kept teacher blocks of a 30-block teacher (10 blocks each unless stated).
CANDIDATES = {
    "every3 (0,3,..,27)": list(range(0, 30, 3)),
    "every3+last (0,3,..,24,29)": [*range(0, 27, 3), 29],
    "first2+every3+last2": [0, 1, 4, 8, 12, 16, 20, 24, 28, 29],
    "first4+middle3+last3": [0, 1, 2, 3, 9, 15, 21, 27, 28, 29],
    "first5+last5": [0, 1, 2, 3, 4, 25, 26, 27, 28, 29],
    "first8+last2": [0, 1, 2, 3, 4, 5, 6, 7, 28, 29],
    "first10": list(range(10)),
    "every2 (15 blocks)": list(range(0, 30, 2)),
    "first10+last5 (15 blocks)": [*range(10), *range(25, 30)],
}


def ce_per_sequence(model, batches) -> tuple[np.ndarray, np.ndarray]:
  """Per-sequence Σ −log q(y) over response tokens and the token counts."""
  sums, counts = [], []
  for b in batches:
    logits = model(jnp.asarray(b["input_ids"]), attention_mask=jnp.asarray(b["attention_mask"]),
                   positions=jnp.asarray(b["positions"])).logits
    ce = losses.cross_entropy(logits, jnp.asarray(b["labels"]), jnp.asarray(b["loss_mask"]), reduction="none")
    sums.append(np.asarray(ce, np.float64).sum(-1))
    counts.append(np.asarray(b["loss_mask"], np.float64).sum(-1))
  sums, counts = np.concatenate(sums), np.concatenate(counts)
  keep = counts > 0
  return sums[keep], counts[keep]


def summary(sums, counts, seed=0, num_bootstrap=1000) -> dict:
  w = np.random.default_rng(seed).multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=num_bootstrap)
  boot = (w @ sums) / (w @ counts)
  return {"ce": float(sums.sum() / counts.sum()), "ci": [float(np.percentile(boot, 2.5)),
                                                          float(np.percentile(boot, 97.5))]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sequences", type=int, default=64)
  parser.add_argument("--out", default=None, help="write the numbers to this JSON file")
  parser.add_argument("overrides", nargs="*", help="train.py presets / key=value defining the data")
  args = parser.parse_args(argv)
  cfg = tconfig.resolve(args.overrides)
  tokenizer = model_sources.load_run_tokenizer(cfg.data)
  batches = loading.held_out_batches(loading.held_out_examples(cfg.data), tokenizer, cfg.data,
                                     batch_size=args.sequences, num_batches=1)
  teacher = models.load_gguf()
  out = {"data": tconfig.to_dict(cfg)["data"], "sequences": args.sequences, "ln_V": math.log(teacher.config.vocab_size),
         "candidates": {}}
  t0 = time.time()
  out["teacher"] = summary(*ce_per_sequence(teacher, batches))
  print(f"teacher (30 blocks): CE {out['teacher']['ce']:.3f}  {out['teacher']['ci']}", flush=True)
  for name, kept in CANDIDATES.items():
    student, _ = models.student_from_teacher(teacher, keep_layers=kept)
    res = summary(*ce_per_sequence(student, batches))
    out["candidates"][name] = {"blocks": kept, **res}
    print(f"{name}: CE {res['ce']:.3f}  [{res['ci'][0]:.3f}, {res['ci'][1]:.3f}]", flush=True)
  out["seconds"] = time.time() - t0
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
