"""``python -m jaxlens.train.teacher_responses [PRESET ...] [key=value ...] out=PATH``: SeqKD data.

Samples the teacher's response to every training prompt of the config (``data.source`` after the held-out split,
``data.template``; each distinct ``(instruction, input)`` once) with ``data.sample_temperature``,
``data.sample_top_p`` and ``data.max_new_tokens`` (0: ``seq_len − max_prompt_len``), in batches of ``batch_size``
prompts, and writes them as JSONL (:mod:`jaxlens.data.teacher_responses`; every record carries the sampling
settings). Train on them with ``data.teacher_responses=PATH``.

* Resumable: records already in ``PATH`` are kept and their prompts skipped; a torn last line is dropped. Batch j
  of a process always holds the same prompts and draws with ``fold_in(fold_in(PRNGKey(seed), process), j)``, so a
  resumed file equals an uninterrupted one. Settings that differ from the file's records are refused.
* Sharded over hosts: process i of P answers prompts ``i, i + P, …`` into ``PATH.<i>-of-<P>``.
* Prompts longer than ``data.max_prompt_len`` (which training drops) are recorded with an empty output and
  ``"skipped": true``.

Errors in the configuration exit with status 2 and one ``error:`` line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens import data as jdata
from jaxlens.data.teacher_responses import prompt_key
from jaxlens.data.teacher_responses import read_records
from jaxlens.data.teacher_responses import shard_path
from jaxlens.parallel import distributed
from jaxlens.run import config as tconfig
from jaxlens.run import model_sources
from jaxlens.train.on_policy import Sampling
from jaxlens.train.on_policy import sample_rows
from jaxlens.train.step import ModelParts


def sampling_record(cfg: tconfig.TrainConfig) -> dict:
  """The settings stored with every response, as JSON reads them back (a resumed file must hold the same)."""
  d = cfg.data
  settings = {"teacher": dataclasses.asdict(cfg.teacher), "template": d.template, "max_prompt_len": d.max_prompt_len,
              "max_new_tokens": d.new_tokens, "temperature": d.sample_temperature, "top_p": d.sample_top_p,
              "seed": cfg.seed, "data": d.source, "split_seed": d.split_seed, "held_out_fraction": d.held_out_fraction}
  return json.loads(json.dumps(settings))  # tuples become lists, as in the file


def training_prompts(cfg: tconfig.TrainConfig) -> list[dict[str, str]]:
  """The distinct training prompts ``{"instruction", "input"}`` in data order (after the held-out split)."""
  train, _ = jdata.split(cfg.data)
  prompts = {prompt_key(e): None for e in train}
  return [{"instruction": i, "input": x} for i, x in prompts]


def existing_records(path: str, settings: dict) -> list[dict]:
  """The complete records already in ``path`` (its torn last line cut off the file).

  Raises:
    ConfigError: a record written with other settings.
  """
  if not os.path.exists(path):
    return []
  records = read_records(path)
  with open(path, "rb+") as f:  # cut a torn last line so that appending continues on a line boundary
    content = f.read()
    if content and not content.endswith(b"\n"):
      f.truncate(content.rfind(b"\n") + 1)
  for r in records:
    if r.get("sampling") != settings:
      raise tconfig.ConfigError(f"{path} holds responses sampled with other settings ({r.get('sampling')} vs "
                                f"{settings}); use another out=PATH")
  return records


def write_teacher_responses(cfg: tconfig.TrainConfig, path: str) -> tuple[str, int, int]:
  """Sample and append the missing teacher responses of this process's prompts.

  Returns:
    ``(file, written, total)``: this process's file, the records added now, and its prompt count.
  """
  p = cfg.parallel
  distributed.initialize(p.distributed, p.coordinator_address or None, p.num_processes or None,
                         p.process_id if p.process_id >= 0 else None)
  out = shard_path(path, jax.process_index(), jax.process_count())
  settings = sampling_record(cfg)
  done = {prompt_key(r) for r in existing_records(out, settings)}
  prompts = training_prompts(cfg)[jax.process_index()::jax.process_count()]
  tokenizer = model_sources.load_run_tokenizer(cfg.data)
  teacher = model_sources.load_teacher(cfg.teacher, dtype=cfg.precision.compute_dtype)
  model_sources.cast_params(teacher, cfg.precision.teacher_params_dtype)
  d = cfg.data
  sampling = Sampling(fraction=1.0, max_new_tokens=d.new_tokens, prompt_width=d.max_prompt_len,
                      temperature=d.sample_temperature, top_p=d.sample_top_p, eos_ids=(tokenizer.eos_id,),
                      pad_id=tokenizer.pad_id)
  parts = ModelParts.of(teacher)
  params = nnx.to_pure_dict(parts.template)
  sample = jax.jit(lambda params, batch, key: sample_rows(parts.merge(params), batch, key, sampling))
  base_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), jax.process_index())
  written = 0
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "a", encoding="utf-8") as f:
    for j in range(0, len(prompts), cfg.batch_size):
      chunk = prompts[j:j + cfg.batch_size]
      if all(prompt_key(e) in done for e in chunk):
        continue
      ids = [tokenizer.encode(jdata.format_prompt(e, d.template)) for e in chunk]
      rows = [(jdata.TokenizedExample(np.asarray(x, np.int32), len(x)),) for x in ids if len(x) <= d.max_prompt_len]
      batch = jdata.collate(rows, seq_len=d.seq_len, pad_id=tokenizer.pad_id, batch_size=cfg.batch_size)
      got = jax.device_get(sample(params, {k: jnp.asarray(v) for k, v in batch.items()},
                                  jax.random.fold_in(base_key, j // cfg.batch_size)))
      lines, row = [], 0
      for example, prompt in zip(chunk, ids):
        record = {**example, "output": "", "finished": False, "sampling": settings}
        if len(prompt) > d.max_prompt_len:
          record["skipped"] = True
        else:
          n = int(got["attention_mask"][row].sum())
          response = [int(t) for t in got["input_ids"][row, len(prompt):n]]
          finished = bool(response) and response[-1] == tokenizer.eos_id
          record.update(output=tokenizer.decode(response[:-1] if finished else response), finished=finished)
          row += 1
        if prompt_key(example) not in done:
          lines.append(json.dumps(record, ensure_ascii=False) + "\n")
      f.write("".join(lines))
      f.flush()
      written += len(lines)
  return out, written, len(prompts)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the exit status (2 with one ``error:`` line on a bad configuration)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "help") for a in argv):
    print(__doc__)
    return 0
  outs = [a.partition("=")[2] for a in argv if a.startswith("out=")]
  try:
    if len(outs) != 1 or not outs[0]:
      raise tconfig.ConfigError("give the output file once: out=PATH")
    cfg = tconfig.resolve([a for a in argv if not a.startswith("out=")])
    out, written, total = write_teacher_responses(cfg, outs[0])
  except tconfig.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(f"teacher responses: {out}: {written} written now, {total} prompts in this shard")
  return 0


if __name__ == "__main__":
  sys.exit(main())
