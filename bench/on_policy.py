"""Cost of on-policy distillation: the training step at λ = 0 (off-policy) vs λ > 0 at the same batch.

Each λ runs ``train.py`` in its own process with the same preset and overrides (``steps=K log_every=K``): the
metrics record of step K covers steps 2…K (compilation excluded) and gives ``ms_per_step`` (sampling + step) and,
for λ > 0, the last step's ``on_policy/sample_ms`` and generated tokens/s. Sampling decodes every row of the batch
(static shapes) and keeps a λ share, so its cost hardly depends on λ > 0.

CPU (2 shared cores; the numbers are noisy, ratios come from one invocation)::

  python bench/on_policy.py smollm2 --steps 6 --out bench/out/on_policy_cpu

GPU (bf16 compute; sampling in bf16 by ``data.sampling_dtype=auto``)::

  python bench/on_policy.py smollm2 batch_size=32 data.seq_len=256 data.max_prompt_len=128 \\
      precision.compute=bfloat16 --steps 20 --out bench/out/on_policy_gpu

Writes ``results.json`` and ``results.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(words: list[str], fraction: float, steps: int, folder: str) -> dict:
  """One training process; returns its step-K metrics record and the process wall time."""
  out_dir = os.path.join(folder, f"lambda_{fraction}")
  cmd = [sys.executable, str(ROOT / "train.py"), *words, f"data.on_policy_fraction={fraction}", f"steps={steps}",
         f"log_every={steps}", "eval_every=0", "save_every=0", "progress=false", "resume=never", f"out_dir={out_dir}"]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
  records = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
  last = [r for r in records if r.get("step") == steps and "ms_per_step" in r][-1]
  return {**last, "process_s": time.time() - t0}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("words", nargs="*", default=["smollm2"], help="train.py presets and key=value overrides")
  parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.5, 1.0])
  parser.add_argument("--steps", type=int, default=6, help="K: steps 2…K are timed")
  parser.add_argument("--out", default="bench/out/on_policy")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  with tempfile.TemporaryDirectory() as folder:
    rows = {f: run(args.words, f, args.steps, folder) for f in args.fractions}
  base = rows[args.fractions[0]]["ms_per_step"]
  lines = [f"`python bench/on_policy.py {' '.join(args.words)} --steps {args.steps}`", "",
           "| λ | ms / step (steps 2…K) | × λ=0 | sample ms (step K) | sampled rows | generated tokens | "
           "generated tok/s | response tokens (step K) |", "|---|---|---|---|---|---|---|---|"]
  for f, r in rows.items():
    lines.append(f"| {f} | {r['ms_per_step']:.0f} | {r['ms_per_step'] / base:.2f} | "
                 f"{r.get('on_policy/sample_ms', 0):.0f} | {r.get('on_policy/sampled_rows', 0):.0f} | "
                 f"{r.get('on_policy/generated_tokens', 0):.0f} | {r.get('on_policy/generated_tokens_per_s', 0):.1f} | "
                 f"{r['tokens']:.0f} |")
  text = "\n".join(lines)
  print(text)
  (pathlib.Path(args.out) / "results.md").write_text(text + "\n")
  (pathlib.Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))


if __name__ == "__main__":
  main()
