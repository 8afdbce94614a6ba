"""Does on-policy sampling help? Off-policy vs λ = 0.5 for RKL and for DistillLens on the real SmolLM2 teacher.

  python experiments/on_policy.py --out runs/on_policy --steps 24 --seeds 0          # CPU, ~1 h on 2 busy cores
  python experiments/on_policy.py --out runs/on_policy --steps 24 --seeds 0 1 2 --score-only   # re-score

Runs (``python train.py smollm2 <preset> data.on_policy_fraction=λ steps=S seed=s out_dir=<out>/<name>_s<s>``):

  rkl_off  onpolicy-rkl, λ = 0            RKL at the output, α = 1, dataset responses only
  rkl_on   onpolicy-rkl, λ = 0.5          the same with half the rows sampled by the student
  dl_off   distilllens-onpolicy, λ = 0    DistillLens (RKL + lens JSD), dataset responses (= the distilllens preset)
  dl_on    distilllens-onpolicy, λ = 0.5  DistillLens on mixed-policy batches

Scores of every student (and ``init``, the untrained teacher-initialised student), on the runs' shared held-out
split (the first ``--batches`` × 8 held-out examples):

  tf_rkl       teacher-forced token-mean KL(q ‖ p) at the output on the held-out *dataset* responses
  own_rkl      token-mean KL(q ‖ p) along the student's *own* samples of the held-out prompts (what on-policy
               training targets), averaged over ``--sample-seeds``
  own_nll      the teacher's token-mean NLL −log p(y_t) of those samples (lower: text the teacher finds likelier)

Writes ``<out>/on_policy.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNS = {"rkl_off": ["onpolicy-rkl"], "rkl_on": ["onpolicy-rkl"], "dl_off": ["distilllens-onpolicy"],
        "dl_on": ["distilllens-onpolicy"]}  # λ set per run: 0 (off) or 0.5 (on)


def train(out: str, name: str, steps: int, seed: int, preset: list[str]) -> str:
  folder = os.path.join(out, f"{name}_s{seed}")
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), *preset, *RUNS[name], f"steps={steps}", f"seed={seed}",
         "data.on_policy_fraction=0.5" if name.endswith("_on") else "data.on_policy_fraction=0",
         "progress=false", "eval_every=0", f"out_dir={folder}"]
  print(" ".join(cmd[1:]), flush=True)
  subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
  return folder


def score(folder: str | None, reference: str, batches: int, sample_seeds: list[int]) -> dict:
  """The three scores of one run's student (``folder=None``: the untrained student of ``reference``'s config)."""
  import jax
  import jax.numpy as jnp

  from jaxlens import data as jdata
  from jaxlens import losses
  from jaxlens.run import model_sources
  from jaxlens.train import on_policy
  from jaxlens.train.trainer import build_data

  teacher, student, info = model_sources.load_run_models(reference)
  cfg = info.config
  if folder is None:
    student = model_sources.make_student(cfg.student, teacher)
  elif folder != reference:
    _, student, _ = model_sources.load_run_models(folder)
  _, held_out, pad_id = build_data(cfg, teacher.config.vocab_size)
  eos = model_sources.load_run_tokenizer(cfg.data).eos_id
  it = jdata.BatchIterator(held_out, global_batch_size=8, seq_len=cfg.data.seq_len, pad_id=pad_id, shuffle=False,
                           drop_last=True, num_epochs=1)
  fixed = [{k: jnp.asarray(v) for k, v in b.items() if k in jdata.BATCH_KEYS} for _, b in zip(range(batches), it)]
  sampling = on_policy.Sampling(1.0, cfg.data.new_tokens, cfg.data.max_prompt_len, temperature=1.0, eos_ids=(eos,),
                                pad_id=pad_id)

  @jax.jit
  def sums(batch):
    kw = dict(attention_mask=batch["attention_mask"], positions=batch["positions"])
    t, s = teacher(batch["input_ids"], **kw).logits, student(batch["input_ids"], **kw).logits
    m = batch["loss_mask"]
    return (losses.reverse_kl(t, s, m, reduction="sum"), losses.cross_entropy(t, batch["labels"], m, reduction="sum"),
            m.sum())

  sample = jax.jit(lambda batch, key: on_policy.sample_rows(student, batch, key, sampling))
  rkl, _, n = map(float, (sum(x) for x in zip(*[sums(b) for b in fixed])))
  own = [sums(sample(b, jax.random.fold_in(jax.random.PRNGKey(s), i))) for s in sample_seeds for i, b in enumerate(fixed)]
  own_rkl, own_nll, own_n = map(float, (sum(x) for x in zip(*own)))
  return {"tf_rkl": rkl / n, "own_rkl": own_rkl / own_n, "own_nll": own_nll / own_n, "tokens": n, "own_tokens": own_n}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/on_policy")
  parser.add_argument("--steps", type=int, default=24)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--batches", type=int, default=4)
  parser.add_argument("--sample-seeds", type=int, nargs="+", default=[10, 20, 30])
  parser.add_argument("--score-only", action="store_true")
  parser.add_argument("--preset", nargs="+", default=["smollm2"], help="model presets (tiny: a smoke test)")
  args = parser.parse_args()
  folders = {(name, seed): os.path.join(args.out, f"{name}_s{seed}") for seed in args.seeds for name in RUNS}
  if not args.score_only:
    for (name, seed) in folders:
      if not os.path.exists(os.path.join(folders[name, seed], "checkpoints")):
        train(args.out, name, args.steps, seed, args.preset)
  reference = folders[next(iter(folders))]
  results = {"init": score(None, reference, args.batches, args.sample_seeds)}
  for (name, seed), folder in folders.items():
    results[f"{name}_s{seed}"] = score(folder, reference, args.batches, args.sample_seeds)
  with open(os.path.join(args.out, "on_policy.json"), "w") as f:
    json.dump({"args": vars(args), "results": results}, f, indent=1)
  print("| student | held-out teacher-forced KL(q‖p) | own samples KL(q‖p) | teacher NLL of own samples |")
  print("|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['tf_rkl']:.4f} | {r['own_rkl']:.4f} | {r['own_nll']:.3f} |")


if __name__ == "__main__":
  main()
