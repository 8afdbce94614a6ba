"""Benchmark of the logit-lens loss (forward + backward): naive JAX, tiled jaxlens, bare matmuls, PyTorch + Liger.

Same inputs (seeded numpy, identical in every variant), same run: P layer pairs, JSD(β), teacher bf16, student
float32 parameters under bf16 compute, 25% of tokens masked. Every variant runs in its own subprocess so the device
peak memory (``memory_stats()["peak_bytes_in_use"]`` / ``torch.cuda.max_memory_allocated``) is its own.

GPU (one call; carry the liger-kernel wheel, ``pip download --no-deps liger-kernel==0.8.5 -d .whl``)::

  pip install --no-deps .whl/liger_kernel-0.8.5-py3-none-any.whl && \\
    python bench/lens.py --device gpu --torch --preset gpt2 smollm2 --tokens 4096 16384 --out bench/out/gpu

CPU (reduced sizes, no Liger)::

  python bench/lens.py --device cpu --ratio-by cpu --preset smollm2 --scale 0.125 --tokens 1024 --block 256

Variants:
  naive            ``jit(value_and_grad(lens_loss(implementation="reference")))``: materialises ``[P, N, V]``.
  tiled            ``jit(value_and_grad(lens_loss(implementation="tiled")))``: jaxlens' kernel (grads in forward),
                   all P pairs in one call (the kernel's P axis; what the training objective does).
  tiled_per_pair   the same kernel called once per pair (P calls, P unembedding gradients summed).
  tiled_recompute  the same tiles with the gradient sweep moved to the backward (tokamax's way; kept here only
                   to document why the kernel forms gradients in the forward).
  matmuls          the projection matmuls alone, per pair: teacher fwd, student fwd, dX, dW (bf16 in, f32 acc).
  matmuls_padded   the same at V padded to a multiple of 128.
  liger            PyTorch + ``LigerFusedLinearJSDLoss`` once per pair (``--torch``, CUDA only).

Writes ``results.json`` and ``results.md`` (table with times, achieved TFLOP/s vs a measured bf16 matmul peak,
peak and compiled-temporary memory, ratios) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

PRESETS = {  # teacher dim, student dim, vocabulary
    "gpt2": (1600, 768, 50257),  # GPT-2 XL -> GPT-2 base
    "smollm2": (576, 576, 49152),  # SmolLM2-135M -> a 10-layer SmolLM2
}
JAX_VARIANTS = ("matmuls", "matmuls_padded", "tiled", "tiled_per_pair", "tiled_recompute", "naive")
MASKED_FRACTION = 0.25
GIB = 2**30


def scaled_shapes(preset: str, scale: float) -> tuple[int, int, int]:
  teacher_dim, student_dim, vocab = PRESETS[preset]
  return (max(8, round(teacher_dim * scale)), max(8, round(student_dim * scale)), max(128, round(vocab * scale)))


def make_numpy_inputs(cfg: dict):
  """Seeded inputs shared by every variant: hidden ``[P, N, D]``, unembeddings ``[D, V]``, mask ``[N]``."""
  import numpy as np

  rng = np.random.default_rng(0)
  pairs, tokens, (teacher_dim, student_dim, vocab) = cfg["pairs"], cfg["tokens"], cfg["shapes"]
  teacher_hidden = rng.standard_normal((pairs, tokens, teacher_dim), dtype=np.float32)
  student_hidden = rng.standard_normal((pairs, tokens, student_dim), dtype=np.float32)
  teacher_unembed = rng.standard_normal((teacher_dim, vocab), dtype=np.float32) * (2.0 / teacher_dim**0.5)
  student_unembed = rng.standard_normal((student_dim, vocab), dtype=np.float32) * (2.0 / student_dim**0.5)
  mask = rng.random(tokens) >= MASKED_FRACTION
  return teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask


def lens_flops(cfg: dict) -> float:
  """Matmul FLOPs of one forward + backward: per pair, teacher fwd + student fwd, dX and dW, at the true V."""
  teacher_dim, student_dim, vocab = cfg["shapes"]
  return cfg["pairs"] * 2.0 * cfg["tokens"] * vocab * (teacher_dim + 3 * student_dim)


def time_it(run, sync, warmup: int, repeats: int) -> dict:
  """Median wall time, every wall time, and the median process CPU time (all threads) of ``run`` in ms.

  The CPU time counts the work this process did, so it is robust to other jobs sharing a CPU machine.
  """
  for _ in range(warmup):
    sync(run())
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    sync(run())
    wall.append(1e3 * (time.perf_counter() - start))
    cpu.append(1e3 * (time.process_time() - start_cpu))
  return {"time_ms": statistics.median(wall), "times_ms": wall, "cpu_ms": statistics.median(cpu)}


def jax_worker(cfg: dict) -> dict:
  """Times one JAX variant; returns its JSON record."""
  import functools

  import jax
  import jax.numpy as jnp

  from jaxlens.losses import TileConfig
  from jaxlens.losses import lens
  from jaxlens.losses import lens_loss

  device = jax.devices()[0]
  if cfg["variant"] == "peak":
    size = 8192 if device.platform == "gpu" else 1024
    a = jax.device_put(jnp.ones((size, size), jnp.bfloat16))
    matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    timing = time_it(lambda: matmul(a), jax.block_until_ready, cfg["warmup"], cfg["repeats"])
    return {"variant": "peak", "size": size, "tflops": 2.0 * size**3 / timing["time_ms"] / 1e9,
            "tflops_cpu_time": 2.0 * size**3 / timing["cpu_ms"] / 1e9}

  tile = TileConfig(block_tokens=cfg["block"], compute_dtype=jnp.bfloat16)
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_numpy_inputs(cfg)
  args = (jnp.asarray(teacher_hidden, jnp.bfloat16), jnp.asarray(student_hidden),
          jnp.asarray(teacher_unembed, jnp.bfloat16), jnp.asarray(student_unembed), jnp.asarray(mask))
  jsd = {"divergence": "jsd", "divergence_kwargs": {"beta": cfg["beta"]}, "tile": tile}
  variant = cfg["variant"]

  if variant in ("naive", "tiled"):
    implementation = "reference" if variant == "naive" else "tiled"

    def fn(th, sh, tw, sw, m):
      loss = lambda s_hidden, s_unembed: lens_loss(th, s_hidden, tw, s_unembed, m, implementation=implementation,
                                                   **jsd)
      return jax.value_and_grad(loss, argnums=(0, 1))(sh, sw)
  elif variant == "tiled_per_pair":
    def fn(th, sh, tw, sw, m):
      def loss(s_hidden, s_unembed):
        pairs = th.shape[0]
        return sum(lens_loss(th[i:i + 1], s_hidden[i:i + 1], tw, s_unembed, m, **jsd) for i in range(pairs)) / pairs
      return jax.value_and_grad(loss, argnums=(0, 1))(sh, sw)
  elif variant == "tiled_recompute":
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def recompute_sums(spec, *core_args):
      return lens._tiled_sweep(spec, *core_args, with_grads=False)

    def recompute_fwd(spec, *core_args):
      return lens._tiled_sweep(spec, *core_args, with_grads=False), core_args

    def recompute_bwd(spec, core_args, cotangents):
      _, pair_sums, d_hidden, d_unembed = lens._tiled_sweep(spec, *core_args, with_grads=True)
      d_loss = cotangents[0]
      return d_loss * pair_sums, None, d_loss * d_hidden, None, d_loss * d_unembed, None

    recompute_sums.defvjp(recompute_fwd, recompute_bwd)
    vocab = student_unembed.shape[1]
    spec = lens.TiledSpec(per_token=lens.per_token_divergence("jsd", {"beta": cfg["beta"]}), vocab_size=vocab,
                          tile=tile)

    def fn(th, sh, tw, sw, m):
      def loss(s_hidden, s_unembed):
        coeffs, _ = lens.pair_coefficients(None, m.astype(jnp.float32), th.shape[0], "mean")
        padded = lens.pad_vocab(s_unembed, tile.vocab_multiple)
        return recompute_sums(spec, coeffs, th, s_hidden, lens.pad_vocab(tw, tile.vocab_multiple), padded,
                              m.astype(jnp.float32))[0]
      return jax.value_and_grad(loss, argnums=(0, 1))(sh, sw)
  elif variant in ("matmuls", "matmuls_padded"):
    if variant == "matmuls_padded":
      args = args[:2] + (lens.pad_vocab(args[2], 128), lens.pad_vocab(args[3], 128)) + args[4:]

    def fn(th, sh, tw, sw, m):
      del m
      sw16 = sw.astype(jnp.bfloat16)
      teacher_logits, student_d_hidden = [], []
      d_unembed = jnp.zeros(sw.shape, jnp.float32)
      for pair in range(th.shape[0]):  # unrolled: every product is a plain GEMM writing its own output
        s_hidden = sh[pair].astype(jnp.bfloat16)
        teacher_logits.append(jnp.matmul(th[pair], tw, preferred_element_type=jnp.bfloat16))
        s_logits = jnp.matmul(s_hidden, sw16, preferred_element_type=jnp.bfloat16)  # stands in for dL/dlogits
        student_d_hidden.append(jnp.matmul(s_logits, sw16.T, preferred_element_type=jnp.float32))
        d_unembed = d_unembed + jnp.matmul(s_hidden.T, s_logits, preferred_element_type=jnp.float32)
      return teacher_logits, student_d_hidden, d_unembed
  else:
    raise ValueError(f"unknown variant {variant!r}")

  record = {"variant": variant}
  try:
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is not None:
      record["compiled_temp_gib"] = analysis.temp_size_in_bytes / GIB
    record.update(time_it(lambda: compiled(*args), jax.block_until_ready, cfg["warmup"], cfg["repeats"]))
    out = compiled(*args)
    if variant in ("naive", "tiled", "tiled_per_pair", "tiled_recompute"):
      record["loss"] = float(out[0])
  except Exception as error:  # noqa: BLE001 (report out-of-memory and the like in the table)
    message = str(error)
    record["error"] = "OOM" if "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower() else message[:300]
    return record
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    record["peak_gib"] = stats["peak_bytes_in_use"] / GIB
  return record


def liger_worker(cfg: dict) -> dict:
  """Times PyTorch + Liger ``LigerFusedLinearJSDLoss`` once per pair (CUDA only); returns its JSON record."""
  try:
    import torch
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
  except ImportError as error:
    return {"variant": "liger", "error": f"skipped: {error}"}
  if not torch.cuda.is_available():
    return {"variant": "liger", "error": "skipped: Liger's chunked loss is benchmarked on CUDA only"}
  device = "cuda"
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_numpy_inputs(cfg)
  th = torch.tensor(teacher_hidden, device=device, dtype=torch.bfloat16)
  tw = torch.tensor(teacher_unembed.T.copy(), device=device, dtype=torch.bfloat16)  # [V, Dt]
  sh = torch.tensor(student_hidden, device=device, requires_grad=True)
  sw = torch.tensor(student_unembed.T.copy(), device=device, requires_grad=True)  # [V, Ds]
  labels = torch.zeros(cfg["tokens"], dtype=torch.long, device=device)
  labels[torch.tensor(~mask, device=device)] = -100
  loss_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=cfg["beta"])

  def step():
    sh.grad, sw.grad = None, None
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = sum(loss_fn(sh[i], sw, th[i], tw, labels) for i in range(cfg["pairs"])) / cfg["pairs"]
    loss.backward()
    return loss

  torch.cuda.reset_peak_memory_stats()
  timing = time_it(step, lambda _: torch.cuda.synchronize(), cfg["warmup"], cfg["repeats"])
  return {"variant": "liger", **timing,
          "peak_gib": torch.cuda.max_memory_allocated() / GIB, "loss": float(step())}


def run_worker(cfg: dict, device: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cuda" if device == "gpu" else "cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
  proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env, capture_output=True,
                        text=True, check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"variant": cfg["variant"], "error": f"worker exit {proc.returncode}: {' | '.join(tail)}"[:400]}
  return json.loads(lines[-1])


def markdown(records: list[dict], peak_tflops: float, header: str, ratio_by: str) -> str:
  key = {"wall": "time_ms", "cpu": "cpu_ms"}[ratio_by]
  rows = [header, "", f"Measured bf16 matmul peak: {peak_tflops:.3g} TFLOP/s. Ratios and TFLOP/s use the "
          f"{'median wall' if ratio_by == 'wall' else 'median process CPU'} time.", "",
          "| preset | tokens | variant | time ms | min ms | CPU ms | × tiled | × matmuls_padded | TFLOP/s | % peak | "
          "peak GiB | compiled temp GiB | loss |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  by_case = {}
  for record in records:
    by_case.setdefault((record["preset"], record["tokens"]), {})[record["variant"]] = record
  for (preset, tokens), variants in by_case.items():
    base = {name: variants.get(name, {}).get(key) for name in ("tiled", "matmuls_padded")}
    for name, record in variants.items():
      fmt = lambda field, spec: format(record[field], spec) if field in record else "–"
      if "error" in record:
        rows.append(f"| {preset} | {tokens} | {name} | {record['error']} | | | | | | | | | |")
        continue
      ratio = lambda b: f"{record[key] / b:.2f}" if b else "–"
      tflops = record["flops"] / record[key] / 1e9
      rows.append(f"| {preset} | {tokens} | {name} | {record['time_ms']:.1f} | {min(record['times_ms']):.1f} | "
                  f"{record['cpu_ms']:.0f} | {ratio(base['tiled'])} | {ratio(base['matmuls_padded'])} | "
                  f"{tflops:.3g} | {100 * tflops / peak_tflops:.0f}% | {fmt('peak_gib', '.2f')} | "
                  f"{fmt('compiled_temp_gib', '.3f')} | {fmt('loss', '.5f')} |")
  return "\n".join(rows) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
  parser.add_argument("--preset", nargs="+", choices=tuple(PRESETS), default=list(PRESETS))
  parser.add_argument("--tokens", nargs="+", type=int, default=[4096, 16384], help="N = B·T per step")
  parser.add_argument("--pairs", type=int, default=5, help="P, layer pairs")
  parser.add_argument("--beta", type=float, default=0.5, help="JSD mixture weight of the teacher")
  parser.add_argument("--block", nargs="+", type=int, default=[1024],
                      help="TileConfig.block_tokens; several values time the tiled variants once per value")
  parser.add_argument("--scale", type=float, default=1.0, help="multiply D and V by this (CPU runs)")
  parser.add_argument("--variants", nargs="+", choices=JAX_VARIANTS, default=list(JAX_VARIANTS))
  parser.add_argument("--torch", action="store_true", help="also run PyTorch + Liger (CUDA only)")
  parser.add_argument("--ratio-by", choices=("wall", "cpu"), default="wall",
                      help="time behind ratios and TFLOP/s: wall clock, or process CPU time (shared CPU machines)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out"))
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    cfg = json.loads(args.worker)
    print(json.dumps(liger_worker(cfg) if cfg["variant"] == "liger" else jax_worker(cfg)), flush=True)
    return

  common = {"pairs": args.pairs, "beta": args.beta, "block": args.block[0], "warmup": args.warmup,
            "repeats": args.repeats}
  peak = run_worker({**common, "variant": "peak", "tokens": 0, "shapes": [0, 0, 0]}, args.device)
  peak_tflops = peak.get("tflops" if args.ratio_by == "wall" else "tflops_cpu_time", float("nan"))
  print(f"bf16 matmul peak: {peak_tflops:.3g} TFLOP/s ({peak})", flush=True)
  records = []
  variants = list(args.variants) + (["liger"] if args.torch else [])
  for preset in args.preset:
    shapes = scaled_shapes(preset, args.scale)
    for tokens in args.tokens:
      for variant in variants:
        for block in args.block if variant.startswith("tiled") else args.block[:1]:
          cfg = {**common, "variant": variant, "tokens": tokens, "shapes": list(shapes), "block": block}
          record = {**run_worker(cfg, args.device), "preset": preset, "tokens": tokens, "shapes": list(shapes),
                    "block": block, "flops": lens_flops(cfg)}
          if variant.startswith("tiled") and block != args.block[0]:
            record["variant"] = f"{variant} (block {block})"
          records.append(record)
          print(json.dumps(record), flush=True)
  args.out.mkdir(parents=True, exist_ok=True)
  command = "python bench/lens.py " + " ".join(sys.argv[1:])
  header = (f"# lens loss benchmark ({args.device}; P={args.pairs}, JSD β={args.beta}, block={args.block[0]}, "
            f"scale={args.scale})\n\n`{command}`")
  (args.out / "results.json").write_text(json.dumps({"command": command, "peak_tflops": peak_tflops,
                                                     "records": records}, indent=1))
  table = markdown(records, peak_tflops, header, args.ratio_by)
  (args.out / "results.md").write_text(table)
  print(table)


if __name__ == "__main__":
  main()
