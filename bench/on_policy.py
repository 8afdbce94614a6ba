"""Cost of on-policy distillation: the off-policy training step vs sampling + step at the same batch.

One process builds the run of ``train.py <words>`` (models, objective, optimizer, data, mesh) and compiles the
step and, per λ, the sampling program (:class:`jaxlens.train.on_policy.Mixer`). Then, ``--reps`` times, it times
in turn — interleaved, so a busy machine slows every variant alike — the off-policy step (λ = 0) and, per λ,
sampling + step on the same batch. Wall time and process CPU time (all threads) are recorded; the ratios to
λ = 0 come from this one run. Sampling decodes every row (static shapes) and keeps a λ share, so its cost hardly
depends on λ > 0.

CPU (2 shared cores)::

  nice -n 10 python bench/on_policy.py smollm2 --reps 5 --out bench/out/on_policy_cpu

GPU (bf16 compute; sampling in bf16 by ``data.sampling_dtype=auto``)::

  python bench/on_policy.py smollm2 batch_size=32 data.seq_len=256 data.max_prompt_len=128 \\
      precision.compute=bfloat16 --reps 10 --out bench/out/on_policy_gpu

Writes ``results.json`` and ``results.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import time


def build(words: list[str]):
  """``(cfg, student, mesh, state, teacher_params, step, batches)`` of the run ``train.py <words>`` would do."""
  import jax

  from jaxlens.parallel import mesh as pmesh
  from jaxlens.run import config as tconfig
  from jaxlens.train import trainer
  from jaxlens.train.objective import Objective
  from jaxlens.train.objective import resolve_layer_pairs
  from jaxlens.train.optimizer import learning_rate_schedule
  from jaxlens.train.optimizer import make_optimizer
  from jaxlens.train.state import initial_state
  from jaxlens.train.step import ModelParts
  from jaxlens.train.step import make_train_step

  cfg = tconfig.resolve(words)
  p = cfg.parallel
  mesh = pmesh.make_mesh(p.data, p.fsdp, p.tensor)
  teacher, student = trainer.build_models(cfg)
  objective = Objective(cfg.loss, resolve_layer_pairs(cfg.loss, teacher.config.num_layers, student.config.num_layers))
  optimizer = make_optimizer(cfg.optim, cfg.steps, student.config.family)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer)
  train_iter, _, _ = trainer.build_data(cfg, teacher.config.vocab_size)
  step = jax.jit(make_train_step(objective, ModelParts.of(student), ModelParts.of(teacher), optimizer,
                                 learning_rate_schedule(cfg.optim, cfg.steps), cfg.grad_accum))
  batch = trainer.to_global(next(train_iter), pmesh.batch_sharding(mesh))
  return cfg, student, mesh, state, teacher_params, step, batch


def timed(fn):
  """``(wall_s, cpu_s, result)`` of ``fn()`` run to completion."""
  import jax
  w, c = time.perf_counter(), time.process_time()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("words", nargs="*", default=["smollm2"], help="train.py presets and key=value overrides")
  parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0])
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--out", default="bench/out/on_policy")
  args = parser.parse_args()

  import jax

  from jaxlens.train import on_policy

  cfg, student, mesh, state, teacher_params, step, batch = build(args.words)
  mixers = {f: on_policy.run_mixer(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, on_policy_fraction=f)),
                                   student, mesh) for f in args.fractions}

  def off():
    return step(state, teacher_params, batch)

  keys = iter(range(10**6))

  def on(f):
    def run():  # a fresh RNG key each call: other coins and samples
      rng = jax.random.key_data(jax.random.PRNGKey(next(keys)))
      mixed, metrics, _ = mixers[f]({**state, "rng": rng}, batch)
      return step(state, teacher_params, mixed), metrics
    return run

  variants = {0.0: off, **{f: on(f) for f in args.fractions}}
  t0 = time.time()
  for fn in variants.values():  # compile
    timed(fn)
  compile_s = time.time() - t0
  times = {f: {"wall": [], "cpu": [], "sample_ms": [], "generated_tokens": [], "sampled_rows": []} for f in variants}
  for _ in range(args.reps):
    for f, fn in variants.items():
      wall, cpu, out = timed(fn)
      times[f]["wall"].append(wall)
      times[f]["cpu"].append(cpu)
      if f:
        for key in ("sample_ms", "generated_tokens", "sampled_rows"):
          times[f][key].append(out[1][f"on_policy/{key}"])
  med = {f: {k: statistics.median(v) if v else 0.0 for k, v in t.items()} for f, t in times.items()}
  d = cfg.data
  lines = [f"`python bench/on_policy.py {' '.join(args.words)} --reps {args.reps}` — {jax.devices()[0].platform}, "
           f"batch {cfg.batch_size} × seq {d.seq_len} (prompt ≤ {d.max_prompt_len}, ≤ {d.new_tokens} new tokens), "
           f"compile {compile_s:.0f} s; medians of {args.reps} interleaved repetitions", "",
           "| λ | wall ms | × λ=0 | CPU ms | × λ=0 | sampling ms (inside) | sampled rows | generated tokens | "
           "generated tok/s |", "|---|---|---|---|---|---|---|---|---|"]
  for f, m in med.items():
    rate = m["generated_tokens"] / (m["sample_ms"] / 1000) if f else 0.0
    lines.append(f"| {f} | {1000 * m['wall']:.0f} | {m['wall'] / med[0.0]['wall']:.2f} | {1000 * m['cpu']:.0f} | "
                 f"{m['cpu'] / med[0.0]['cpu']:.2f} | {m['sample_ms']:.0f} | {m['sampled_rows']:.0f} | "
                 f"{m['generated_tokens']:.0f} | {rate:.0f} |")
  text = "\n".join(lines)
  print(text)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.md").write_text(text + "\n")
  (out / "results.json").write_text(json.dumps({"args": vars(args), "compile_s": compile_s,
                                                "times": {str(f): t for f, t in times.items()}}, indent=1))


if __name__ == "__main__":
  main()
