"""The same distillation step in PyTorch: reference-style (DistillLens's code path) and with Liger-Kernel.

Same pairs, lens layers, batches and masking as ``bench/step.py`` (:mod:`bench.step_shapes`), random weights,
``transformers`` models with SDPA attention. One step: frozen teacher forward with hidden states (bf16 weights on
a GPU), student forward + backward (float32 master weights under bf16 autocast on a GPU; float32 on a CPU), RKL at
the output + JSD(β=0.5) averaged over the 5 lens pairs, ``clip_grad_norm_(1.0)``, AdamW (fused on CUDA).

Variants:
  reference  the reference code's way: full ``[B, T, V]`` logits, stacked ``[P, B, T, V]`` lens logits, float32
             softmaxes, ``log(m + 1e-8)`` in the JSD (DistillLens ``get_jsd`` / ``reverse_kl``).
  liger      every divergence through ``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss`` (liger-kernel 0.8.5,
             β=1 for the RKL output term, β=0.5 per lens pair): no logits are ever materialised. CUDA only; on a
             CPU (no Triton) the record says it was skipped.

Batches run in ascending order in one process; the peak memory is ``torch.cuda.max_memory_allocated`` after a reset
per batch. ``--find-max`` doubles the batch until a real step runs out of memory, then bisects (real steps).
Prints one JSON line per measurement, the fields of ``bench/step.py``'s (MFU from the same analytic FLOP counter,
``jaxlens.train.plan.analytic_flops``, over a bf16 matmul peak measured here).

  python bench/torch_step.py --device gpu --pair gpt2 --batch 8 16 32 --seq-len 512 --find-max
  python bench/torch_step.py --device cpu --pair smollm2 --scale 0.25 --seq-len 128 --batch 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # jaxlens is imported only for its FLOP counter
from step_shapes import PAIRS  # noqa: E402
from step_shapes import PROMPT_FRACTION  # noqa: E402
from step_shapes import pair_shapes  # noqa: E402

import torch  # noqa: E402

GIB = 2**30
VARIANTS = ("reference", "liger")


def hf_model(arch: dict, seq_len: int, dtype, device):
  """A random ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` of ``arch`` (tied embeddings, no dropout, SDPA)."""
  import transformers

  if arch["family"] == "gpt2":
    config = transformers.GPT2Config(vocab_size=arch["vocab_size"], n_positions=max(1024, seq_len),
                                     n_embd=arch["hidden_size"], n_layer=arch["num_layers"], n_head=arch["num_heads"],
                                     n_inner=arch["intermediate_size"], activation_function="gelu_new",
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                                     tie_word_embeddings=True)
    model_cls = transformers.GPT2LMHeadModel
  else:
    config = transformers.LlamaConfig(vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"],
                                      num_hidden_layers=arch["num_layers"], num_attention_heads=arch["num_heads"],
                                      num_key_value_heads=arch["num_kv_heads"], head_dim=arch["head_dim"],
                                      intermediate_size=arch["intermediate_size"], rms_norm_eps=1e-5,
                                      max_position_embeddings=max(2048, seq_len), tie_word_embeddings=True)
    model_cls = transformers.LlamaForCausalLM
  config._attn_implementation = "sdpa"
  with torch.device(device):
    model = model_cls(config)
  return model.to(dtype)


def model_ops(model):
  """``(base model, LM head weight [V, D])``: the body that returns hidden states without logits, and the head."""
  return model.base_model, model.get_output_embeddings().weight


def reference_loss(t_hidden, s_hidden, t_logits, s_logits, pairs, t_head, s_head, mask):
  """RKL(final) + mean-over-pairs JSD(lens) the reference way: materialised, stacked logits, float32 softmaxes."""
  tokens = mask.sum()
  log_p = torch.log_softmax(t_logits.float(), -1)
  log_q = torch.log_softmax(s_logits.float(), -1)
  rkl = ((log_q.exp() * (log_q - log_p)).sum(-1) * mask).sum() / tokens
  t_lens = torch.stack([t_hidden[k] for k, _ in pairs]) @ t_head.T  # [P, B, T, V]
  s_lens = torch.stack([s_hidden[j] for _, j in pairs]) @ s_head.T.to(s_hidden[0].dtype)
  p, q = torch.softmax(t_lens.float(), -1), torch.softmax(s_lens.float(), -1)
  lp, lq = torch.log_softmax(t_lens.float(), -1), torch.log_softmax(s_lens.float(), -1)
  lm = torch.log(0.5 * p + 0.5 * q + 1e-8)
  jsd = 0.5 * (p * (lp - lm)).sum(-1) + 0.5 * (q * (lq - lm)).sum(-1)  # [P, B, T]
  return rkl + (jsd * mask).sum() / (len(pairs) * tokens)


def build_step(variant: str, teacher, student, optimizer, pairs, autocast_device):
  """The step ``(ids, attention_mask, mask, labels) -> loss`` of ``variant`` (one optimizer update)."""
  t_body, t_head = model_ops(teacher)
  s_body, s_head = model_ops(student)
  amp = torch.autocast(autocast_device, dtype=torch.bfloat16) if autocast_device else torch.autocast("cpu",
                                                                                                      enabled=False)
  if variant == "liger":
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
    rkl_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=1.0)
    jsd_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.5)

  def step(ids, attention_mask, mask, labels):
    with torch.no_grad():
      t_hidden = t_body(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    with amp:
      if variant == "reference":
        s_out = student(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True)
        with torch.no_grad():
          t_logits = t_hidden[-1] @ t_head.T
        loss = reference_loss(t_hidden, s_out.hidden_states, t_logits, s_out.logits, pairs, t_head, s_head, mask)
      else:
        s_hidden = s_body(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        flat = lambda h: h.reshape(-1, h.shape[-1])  # noqa: E731
        loss = rkl_fn(flat(s_hidden[-1]), s_head, flat(t_hidden[-1]), t_head, labels)
        loss = loss + sum(jsd_fn(flat(s_hidden[j]), s_head, flat(t_hidden[k]), t_head, labels)
                          for k, j in pairs) / len(pairs)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()

  return step


def matmul_peak(device) -> dict:
  size = 8192 if device == "cuda" else 1024
  a = torch.ones(size, size, dtype=torch.bfloat16, device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  a @ a
  sync()
  times = []
  for _ in range(10):
    start = time.perf_counter()
    a @ a
    sync()
    times.append(time.perf_counter() - start)
  return {"size": size, "tflops": 2.0 * size**3 / sorted(times)[len(times) // 2] / 1e12}


def run(args) -> list[dict]:
  from jaxlens import models
  from jaxlens.train import plan

  device = "cuda" if args.device == "gpu" else "cpu"
  if args.device == "gpu" and not torch.cuda.is_available():
    raise SystemExit("error: --device gpu but torch sees no CUDA device")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  records = []
  peak = matmul_peak(device)

  def emit(record):
    records.append(record)
    print(json.dumps(record), flush=True)
    if args.out:
      with args.out.open("a") as f:
        f.write(json.dumps(record) + "\n")

  emit({"kind": "peak", "side": "torch", "platform": args.device, **peak})
  for pair in args.pair:
    shapes = pair_shapes(pair, args.scale)
    pairs = list(zip(shapes["teacher_layers"], shapes["student_layers"]))
    flops_of = lambda tokens: plan.analytic_flops(  # noqa: E731
        models.ModelConfig(**_model_config(shapes["teacher"])), models.ModelConfig(**_model_config(shapes["student"])),
        tokens=tokens, seq_len=args.seq_len, lens_pairs=len(pairs))["total"]
    for variant in args.variant:
      base = {"pair": pair, "variant": f"torch_{variant}", "seq_len": args.seq_len, "scale": args.scale,
              "platform": args.device}
      if variant == "liger":
        reason = liger_unavailable(device)
        if reason:
          emit({**base, "kind": "step", "error": f"skipped: {reason}"})
          continue
      torch.manual_seed(0)
      teacher = hf_model(shapes["teacher"], args.seq_len, torch.bfloat16 if device == "cuda" else torch.float32,
                         device).eval().requires_grad_(False)
      student = hf_model(shapes["student"], args.seq_len, torch.float32, device).train()
      optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.01,
                                    **({"fused": True} if device == "cuda" else {}))
      step = build_step(variant, teacher, student, optimizer, pairs, device if device == "cuda" else None)

      def measure(batch: int) -> bool:
        ids, attention_mask, mask, labels = random_batch(batch, args.seq_len, shapes["teacher"]["vocab_size"], device)
        record = {**base, "kind": "step", "batch": batch, "tokens": batch * args.seq_len}
        if device == "cuda":
          torch.cuda.empty_cache()
          torch.cuda.reset_peak_memory_stats()
        try:
          for _ in range(args.warmup):
            step(ids, attention_mask, mask, labels)
          sync()
          start, start_cpu = time.perf_counter(), time.process_time()
          for _ in range(args.repeats):
            loss = step(ids, attention_mask, mask, labels)
          sync()
        except torch.OutOfMemoryError:
          optimizer.zero_grad(set_to_none=True)
          emit({**record, "error": "OOM at run time"})
          return False
        step_s = (time.perf_counter() - start) / args.repeats
        flops = flops_of(batch * args.seq_len)
        record.update(step_ms=1e3 * step_s, cpu_ms=1e3 * (time.process_time() - start_cpu) / args.repeats,
                      tokens_per_s=batch * args.seq_len / step_s, flops=flops, tflops=flops / step_s / 1e12,
                      mfu=flops / step_s / 1e12 / peak["tflops"], loss=float(loss))
        if device == "cuda":
          record["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        emit(record)
        return True

      fitting = [b for b in sorted(args.batch) if measure(b)]
      if args.find_max and device == "cuda":
        low = max(fitting) if fitting else 0
        high, probes = None, 0
        candidate = 2 * low if low else 1
        while high is None and probes < args.max_probes:
          probes += 1
          if measure(candidate):
            low, candidate = candidate, 2 * candidate
          else:
            high = candidate
        while high is not None and high - low > max(1, low // 8) and probes < args.max_probes:
          probes += 1
          mid = (low + high) // 2
          if measure(mid):
            low = mid
          else:
            high = mid
        emit({**base, "kind": "max_batch", "batch": low, "confirmed": bool(low), "first_miss": high,
              "probes": probes})
      del teacher, student, optimizer, step
      if device == "cuda":
        torch.cuda.empty_cache()
  return records


def _model_config(arch: dict) -> dict:
  """The jaxlens ``ModelConfig`` fields of ``arch`` (for the FLOP counter only)."""
  gpt2 = arch["family"] == "gpt2"
  return dict(family=arch["family"], vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"],
              num_layers=arch["num_layers"], num_heads=arch["num_heads"], num_kv_heads=arch["num_kv_heads"],
              head_dim=arch["head_dim"], intermediate_size=arch["intermediate_size"], max_position_embeddings=2048,
              norm_eps=1e-5, activation="gelu_new" if gpt2 else "silu", tie_word_embeddings=True,
              attention_bias=gpt2, mlp_bias=gpt2)


def liger_unavailable(device: str) -> str | None:
  """Why the Liger variant cannot run here, or None."""
  if device != "cuda":
    return "Liger-Kernel's Triton kernels need CUDA (CPU run: reference-style only)"
  try:
    import liger_kernel.chunked_loss  # noqa: F401
  except ImportError as error:
    return f"liger-kernel not installed ({error})"
  return None


def random_batch(batch: int, seq_len: int, vocab: int, device):
  """The batch of ``bench/step.py`` (same seed): ids, all-ones attention mask, loss mask, labels (−100 masked)."""
  import numpy as np

  rng = np.random.default_rng(0)
  ids = rng.integers(0, vocab, (batch, seq_len))
  t = np.broadcast_to(np.arange(seq_len), (batch, seq_len))
  mask = (t >= int(PROMPT_FRACTION * seq_len)) & (t < seq_len - 1)
  labels = np.where(mask, np.roll(ids, -1, axis=1), -100)
  to = lambda x, dtype: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
  return to(ids, torch.long), to(np.ones_like(ids), torch.long), to(mask, torch.float32), to(labels, torch.long)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
  parser.add_argument("--pair", nargs="+", choices=tuple(PAIRS), default=["gpt2", "smollm2", "llama"])
  parser.add_argument("--variant", nargs="+", choices=VARIANTS, default=list(VARIANTS))
  parser.add_argument("--batch", nargs="+", type=int, default=[8, 16, 32])
  parser.add_argument("--seq-len", type=int, default=512)
  parser.add_argument("--scale", type=float, default=1.0)
  parser.add_argument("--find-max", action="store_true")
  parser.add_argument("--max-probes", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", type=pathlib.Path, help="append the JSON lines to this file")
  args = parser.parse_args(argv)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
  return run(args)


if __name__ == "__main__":
  main()
