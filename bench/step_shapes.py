"""The teacher → student pairs of the step benchmarks (``bench/step.py``, ``bench/torch_step.py``); plain Python.

Architectures are the real models' (random weights); the lens pairs are the DistillLens recipes'
(``configs/gpt2-xl-base.yaml``, ``configs/llama7b-tinyllama.yaml``) and, for SmolLM2 30 → 10 layers, the uniform
map of 5 pairs (``jaxlens.losses.uniform_layer_map(30, 10, 5)``). Every model ties its input embedding and LM head
(jaxlens' random models always do; LLaMA-7B and TinyLlama do not, which adds a ``[V, D]`` head to each — 3 % of
the LLaMA step's FLOPs, the same on both sides).
"""

from __future__ import annotations

GPT2 = dict(family="gpt2", vocab_size=50257, head_dim=64)
LLAMA = dict(family="llama", head_dim=64)

PAIRS = {
    "gpt2": dict(  # GPT-2 XL -> GPT-2 base
        teacher=dict(GPT2, hidden_size=1600, num_layers=48, num_heads=25, num_kv_heads=25, intermediate_size=6400),
        student=dict(GPT2, hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, intermediate_size=3072),
        teacher_layers=(8, 16, 24, 32, 40), student_layers=(2, 4, 6, 8, 10)),
    "smollm2": dict(  # SmolLM2-135M (30 blocks) -> a 10-block SmolLM2
        teacher=dict(LLAMA, vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                     intermediate_size=1536),
        student=dict(LLAMA, vocab_size=49152, hidden_size=576, num_layers=10, num_heads=9, num_kv_heads=3,
                     intermediate_size=1536),
        teacher_layers=(5, 10, 15, 20, 25), student_layers=(2, 3, 5, 7, 8)),
    "llama": dict(  # LLaMA-7B -> TinyLlama-1.1B shapes
        teacher=dict(LLAMA, vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                     head_dim=128, intermediate_size=11008),
        student=dict(LLAMA, vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                     intermediate_size=5632),
        teacher_layers=(5, 10, 16, 21, 26), student_layers=(4, 7, 11, 15, 18)),
    "tiny": dict(  # a 4-block -> 2-block toy for the smoke test (seconds on a CPU)
        teacher=dict(LLAMA, vocab_size=256, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8,
                     intermediate_size=64),
        student=dict(LLAMA, vocab_size=256, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                     intermediate_size=64),
        teacher_layers=(2, 3), student_layers=(1, 2)),
}
PROMPT_FRACTION = 0.25  # the first quarter of every sequence is prompt: masked out of every loss term
RMS_EPS, LN_EPS = 1e-5, 1e-5


def scaled(arch: dict, scale: float) -> dict:
  """``arch`` with widths, heads, MLP width and vocabulary × ``scale`` (layers and head size kept; CPU runs).

  Key/value heads scale first and query heads keep their group size, so GQA stays valid; GPT-2, whose width must
  be its heads × head size, keeps that relation (LLaMA widths are scaled directly).
  """
  if scale == 1.0:
    return dict(arch)
  group = arch["num_heads"] // arch["num_kv_heads"]
  kv_heads = max(1, round(arch["num_kv_heads"] * scale))
  hidden = max(8, 8 * round(arch["hidden_size"] * scale / 8))
  if arch["family"] == "gpt2":
    hidden = kv_heads * group * arch["head_dim"]
  return dict(arch, hidden_size=hidden, num_kv_heads=kv_heads, num_heads=kv_heads * group,
              intermediate_size=max(8, 8 * round(arch["intermediate_size"] * scale / 8)),
              vocab_size=max(128, round(arch["vocab_size"] * scale)))


def pair_shapes(name: str, scale: float = 1.0) -> dict:
  """The pair ``name`` of :data:`PAIRS` at ``scale`` (teacher, student, lens layers)."""
  pair = PAIRS[name]
  return dict(pair, teacher=scaled(pair["teacher"], scale), student=scaled(pair["student"], scale))
