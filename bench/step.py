"""Benchmark of the whole jaxlens distillation step, built exactly as ``train.py`` builds it, with random weights.

One step = bf16 (GPU) teacher forward, student forward + backward, RKL at the output + JSD(β=0.5) over the 5 lens
pairs of :mod:`bench.step_shapes`, AdamW with clipping — through ``jaxlens.train.trainer`` (``build_models``,
``initial_state``, ``jit_train_step``, ``to_global``): the same shardings, donation and dtype policy as a run.
Batches are random tokens, T tokens per row, the first quarter of every row masked as prompt.

Per (pair, variant) one subprocess (its own device peak memory). For each global batch (ascending) it compiles
the step ahead of time, reads the compiled memory (``memory_analysis()``: arguments + outputs − donated aliases +
temporaries) and, if that fits the device, runs it: ``--warmup`` steps, then ``--repeats`` steps timed with one
sync at the end (the loop's own rhythm: no host sync between steps). ``--find-max`` then doubles the batch while
the compiled memory fits, bisects between the last fit and the first miss (compile only), and confirms the largest
fitting batch with real steps. Prints one JSON line per measurement (and appends them to ``--out``):
tokens/s (B·T per step), step ms, process CPU ms, MFU (``jaxlens.train.plan.analytic_flops`` over a bf16 matmul
peak measured in the same run), device peak GiB, compiled GiB. ``--profile`` traces ``--repeats`` more steps of the
first batch that runs and records where they spend their time (``bench/trace_summary.py``: busy ms per step by op
and by category: matmul, attention, fusion, copy/transpose, ...).

``--alpha`` sets ``loss.alpha``: 1 (default) is DistillLens as the issue's anchors run it, no CE; below 1 adds the
student's CE, which the objective computes inside the output term's sweep (the recipe presets' α = 0.5).

Variants: ``jaxlens`` (the configured step: tiled kernels) and ``naive`` (the same step with
``loss.implementation=reference``: every ``[N, V]`` / ``[P, N, V]`` logit tensor materialised, plain XLA).

GPU (bf16 compute, bf16 teacher, fp32 master weights, cuDNN attention: the recipe presets' defaults)::

  python bench/step.py --device gpu --pair gpt2 smollm2 llama --batch 8 16 32 --seq-len 512 --find-max

CPU (float32, scaled shapes)::

  python bench/step.py --device cpu --pair smollm2 --scale 0.25 --seq-len 128 --batch 2 4 --variant jaxlens naive
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from step_shapes import PAIRS  # noqa: E402
from step_shapes import PROMPT_FRACTION  # noqa: E402
from step_shapes import pair_shapes  # noqa: E402

GIB = 2**30
VARIANTS = ("jaxlens", "naive")


def config_values(job: dict) -> dict:
  """The flat ``key → value`` training config of one benchmark job (``jaxlens.run.config.build_config``)."""
  shapes = pair_shapes(job["pair"], job["scale"])
  gpu = job["device"] == "gpu"
  values = {"teacher.source": "random", "student.source": "random", "teacher.seed": 0, "student.seed": 1,
            "batch_size": job["batch"],
            "data.seq_len": job["seq_len"], "data.max_prompt_len": max(1, job["seq_len"] // 4),
            "loss.alpha": job["alpha"], "loss.output_divergence": "reverse_kl", "loss.lens_divergence": "jsd",
            "loss.beta": 0.5, "loss.teacher_layers": list(shapes["teacher_layers"]),
            "loss.student_layers": list(shapes["student_layers"]), "loss.block_tokens": job["block"],
            "loss.implementation": "reference" if job["variant"] == "naive" else "tiled",
            "precision.compute": "bfloat16" if gpu else "float32",
            "precision.teacher_params": "bfloat16" if gpu else "float32",
            "precision.remat": job["remat"], "precision.attention": job["attention"], "steps": 1000,
            "optim.lr": 1e-5}
  for role in ("teacher", "student"):
    values.update({f"{role}.{k}": v for k, v in shapes[role].items()})
  return values


def random_batch(batch: int, seq_len: int, vocab: int, seed: int = 0) -> dict:
  """Random tokens, no padding, the first ``PROMPT_FRACTION`` of every row masked out of the loss."""
  import numpy as np

  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq_len)).astype(np.int32)
  t = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len))
  loss_mask = (t >= int(PROMPT_FRACTION * seq_len)) & (t < seq_len - 1)
  return {"input_ids": ids, "attention_mask": np.ones_like(ids), "positions": t.copy(),
          "loss_mask": loss_mask.astype(np.float32), "labels": np.roll(ids, -1, axis=1)}


def matmul_peak(device) -> dict:
  """TFLOP/s of a bf16 matmul with float32 accumulation (8192³ on a GPU, 1024³ on a CPU), median of 10."""
  import jax
  import jax.numpy as jnp

  size = 8192 if device.platform == "gpu" else 1024
  a = jax.device_put(jnp.ones((size, size), jnp.bfloat16), device)
  matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  jax.block_until_ready(matmul(a))
  times = []
  for _ in range(10):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    times.append(time.perf_counter() - start)
  return {"size": size, "tflops": 2.0 * size**3 / sorted(times)[len(times) // 2] / 1e12}


def worker(job: dict) -> None:
  """Builds the models once, then measures every batch of ``job``; prints one JSON line per measurement."""
  import jax

  from jaxlens.parallel import mesh as pmesh
  from jaxlens.run import config as tconfig
  from jaxlens.train import plan
  from jaxlens.train import trainer
  from jaxlens.train.objective import Objective
  from jaxlens.train.objective import resolve_layer_pairs
  from jaxlens.train.optimizer import learning_rate_schedule
  from jaxlens.train.optimizer import make_optimizer
  from jaxlens.train.state import initial_state

  device = jax.devices()[0]
  emit = lambda record: print(json.dumps({**base, **record}), flush=True)  # noqa: E731
  base = {k: job[k] for k in ("pair", "variant", "seq_len", "scale", "remat", "attention", "block", "alpha")}
  base["platform"] = device.platform
  peak = matmul_peak(device) if job["peak"] is None else {"tflops": job["peak"]}  # measured once per run
  if job["peak"] is None:
    emit({"kind": "peak", **peak})

  cfg = tconfig.build_config(tconfig.TrainConfig, config_values({**job, "batch": job["batches"][0]}))
  start = time.perf_counter()
  teacher, student = trainer.build_models(cfg)
  objective = Objective(cfg.loss, resolve_layer_pairs(cfg.loss, teacher.config.num_layers,
                                                      student.config.num_layers))
  optimizer = make_optimizer(cfg.optim, cfg.steps, student.config.family)
  schedule = learning_rate_schedule(cfg.optim, cfg.steps)
  mesh = pmesh.make_mesh(cfg.parallel.data, cfg.parallel.fsdp, cfg.parallel.tensor)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer)
  step_fn = trainer.jit_train_step(cfg, objective, student, teacher, optimizer, schedule, mesh, state)
  batch_sharding = pmesh.batch_sharding(mesh)
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit")
  emit({"kind": "setup", "build_s": time.perf_counter() - start, "mesh": dict(mesh.shape),
        "attention_kernel": student.attention, "device_limit_gib": limit / GIB if limit else None})

  def compiled_for(batch: int):
    """``(compiled step or None, compiled GiB, global batch arrays)``; None when the compile says it does not fit."""
    arrays = trainer.to_global(random_batch(batch, job["seq_len"], teacher.config.vocab_size), batch_sharding)
    try:
      compiled = step_fn.lower(state, teacher_params, arrays).compile()
    except Exception as error:  # noqa: BLE001 (an out-of-memory compile is a result, not a crash)
      if "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower():
        return None, None, arrays
      raise
    analysis = compiled.memory_analysis()
    need = None
    if analysis is not None:
      need = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
              + analysis.temp_size_in_bytes) / GIB
    if limit and need and need * GIB > limit:
      return None, need, arrays
    return compiled, need, arrays

  def measure(batch: int) -> bool:
    """Compile, and if it fits, time ``batch``; emits a record; returns whether it ran."""
    nonlocal state
    start = time.perf_counter()
    compiled, need, arrays = compiled_for(batch)
    compile_s = time.perf_counter() - start
    record = {"kind": "step", "batch": batch, "tokens": batch * job["seq_len"], "compiled_gib": need,
              "compile_s": compile_s}
    if compiled is None:
      emit({**record, "error": "does not fit (compiled memory)"})
      return False
    try:
      for _ in range(job["warmup"]):
        state, metrics = compiled(state, teacher_params, arrays)
      jax.block_until_ready(metrics)
      start, start_cpu = time.perf_counter(), time.process_time()
      for _ in range(job["repeats"]):
        state, metrics = compiled(state, teacher_params, arrays)
      jax.block_until_ready((state, metrics))
      step_s = (time.perf_counter() - start) / job["repeats"]
      cpu_s = (time.process_time() - start_cpu) / job["repeats"]
    except Exception as error:  # noqa: BLE001
      message = str(error)
      oom = "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()
      emit({**record, "error": "OOM at run time" if oom else message[:300]})
      return False
    flops = plan.analytic_flops(teacher.config, student.config, tokens=batch * job["seq_len"],
                                seq_len=job["seq_len"], lens_pairs=objective.pairs.num_pairs)["total"]
    stats = device.memory_stats() or {}
    record.update(step_ms=1e3 * step_s, cpu_ms=1e3 * cpu_s, tokens_per_s=batch * job["seq_len"] / step_s,
                  flops=flops, tflops=flops / step_s / 1e12, loss=float(metrics["loss/total"]))
    record["mfu"] = record["tflops"] / peak["tflops"]
    if "peak_bytes_in_use" in stats:
      record["peak_gib"] = stats["peak_bytes_in_use"] / GIB  # the process peak: batches run in ascending order
    emit(record)
    if job["profile"] and not profiled:
      profiled.append(batch)
      profile(compiled, arrays, batch)
    return True

  def profile(compiled, arrays, batch: int) -> None:
    """Traces ``--repeats`` more steps of ``batch`` and emits where they spend their time (trace_summary)."""
    nonlocal state
    from trace_summary import summarize
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        for _ in range(job["repeats"]):
          state, metrics = compiled(state, teacher_params, arrays)
        jax.block_until_ready((state, metrics))
      emit({"kind": "profile", "batch": batch, **summarize(trace_dir, job["repeats"])})

  profiled = []  # the first batch that ran is profiled once

  fitting = [b for b in sorted(job["batches"]) if measure(b)]
  if not (job["find_max"] and limit):
    return
  low = max(fitting) if fitting else 0
  high = None
  probes = 0
  candidate = 2 * low if low else job["batches"][0]
  while high is None and probes < job["max_probes"]:  # doubling, compile only
    probes += 1
    if compiled_for(candidate)[0] is None:
      high = candidate
    else:
      low, candidate = candidate, 2 * candidate
  while high is not None and high - low > max(1, low // 8) and probes < job["max_probes"]:  # bisection
    probes += 1
    mid = (low + high) // 2
    if compiled_for(mid)[0] is None:
      high = mid
    else:
      low = mid
  if low and low not in fitting:
    ran = measure(low)
    emit({"kind": "max_batch", "batch": low, "confirmed": ran, "first_miss": high, "probes": probes})
  else:
    emit({"kind": "max_batch", "batch": low, "confirmed": bool(low), "first_miss": high, "probes": probes})


def run_worker(job: dict, out: pathlib.Path | None) -> list[dict]:
  """Runs :func:`worker` in a subprocess; returns its JSON records (an ``error`` record if it died), each also
  appended to ``out`` as it arrives (so a run stopped by a timeout keeps what it measured)."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  if job["device"] == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  repo = str(HERE.parent)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
  errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty stderr cannot block the worker
  proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(job)], env=env, stdout=subprocess.PIPE,
                          stderr=errors, text=True)

  def stop(signum, frame):  # a timeout stops this process: stop the worker too, so it frees the device
    proc.kill()
    raise SystemExit(128 + signum)

  signal.signal(signal.SIGTERM, stop)
  records = []

  def keep(record):
    records.append(record)
    print(json.dumps(record), flush=True)
    if out:
      with out.open("a") as f:
        f.write(json.dumps(record) + "\n")

  for line in proc.stdout:
    if line.startswith("{"):
      keep(json.loads(line))
  returncode = proc.wait()
  errors.seek(0)
  stderr = errors.read()
  if returncode:
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    keep({"kind": "error", "pair": job["pair"], "variant": job["variant"],
          "error": f"worker exit {proc.returncode}: {tail}"[:600]})
  return records


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
  parser.add_argument("--pair", nargs="+", choices=tuple(PAIRS), default=["gpt2", "smollm2", "llama"])
  parser.add_argument("--variant", nargs="+", choices=VARIANTS, default=["jaxlens"])
  parser.add_argument("--batch", nargs="+", type=int, default=[8, 16, 32], help="global batches (sequences)")
  parser.add_argument("--seq-len", type=int, default=512)
  parser.add_argument("--scale", type=float, default=1.0, help="multiply widths, heads and vocabulary (CPU runs)")
  parser.add_argument("--block", type=int, default=1024, help="loss.block_tokens of the tiled kernels")
  parser.add_argument("--alpha", type=float, default=1.0, help="loss.alpha (below 1 adds the student's CE)")
  parser.add_argument("--remat", default="none", help="precision.remat: none | block | dots")
  parser.add_argument("--attention", default="auto", help="precision.attention: xla | cudnn | auto")
  parser.add_argument("--find-max", action="store_true", help="search the largest fitting batch (GPU)")
  parser.add_argument("--max-probes", type=int, default=5, help="compile-only probes of the max-batch search")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--profile", action="store_true",
                      help="trace the first batch that runs and record its op-time summary (bench/trace_summary.py)")
  parser.add_argument("--out", type=pathlib.Path, help="append the JSON lines to this file")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker(json.loads(args.worker))
    return []
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
  records = []
  for pair in args.pair:
    for variant in args.variant:
      peak = next((r["tflops"] for r in records if r.get("kind") == "peak"), None)
      job = {"device": args.device, "pair": pair, "variant": variant, "batches": sorted(args.batch),
             "seq_len": args.seq_len, "scale": args.scale, "block": args.block, "alpha": args.alpha,
             "remat": args.remat,
             "attention": args.attention, "find_max": args.find_max, "max_probes": args.max_probes,
             "warmup": args.warmup, "repeats": args.repeats, "peak": peak, "profile": args.profile}
      records += run_worker(job, args.out)
  return records


if __name__ == "__main__":
  main()
