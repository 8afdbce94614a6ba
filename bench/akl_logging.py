"""Cost of logging AKL's per-token head weight in the train step's output term, at SmolLM2 shapes.

``python bench/akl_logging.py`` compiles ``value_and_grad`` of the AKL output term (the objective's one kernel call,
``Objective._pair_sums``) at D 576, V 49,152, N = 2048 tokens, 256-token blocks, three ways, and prints compiled
temporary memory and process CPU time per call:

- **no logging**: the loss alone;
- **folded** (the train step): the head weight and its histogram as ``token_statistics`` of the same sweep;
- **second pass** (what the step did before): the loss, then a separate ``lax.map`` over 256-token blocks that
  recomputes both models' logits and the head weight with the sort-free head search.

The folded statistic uses the loss's own head search on the loss's own logits tile, so XLA computes the weight once
for both (common-subexpression elimination); the last line checks the two logged means agree.
"""

import time

import jax
import jax.numpy as jnp

from jaxlens import losses
from jaxlens.run.config import LossConfig
from jaxlens.train.objective import Objective
from jaxlens.train.objective import head_weight_histogram

N, D, V, BLOCK, REPEATS = 2048, 576, 49152, 256, 3


def main() -> None:
  k = jax.random.split(jax.random.key(0), 4)
  t_h, s_h = jax.random.normal(k[0], (1, N, D)), jax.random.normal(k[1], (1, N, D))
  t_w, s_w = 0.05 * jax.random.normal(k[2], (D, V)), 0.05 * jax.random.normal(k[3], (D, V))
  mask = jnp.ones((N,))
  objective = Objective(LossConfig(output_divergence="adaptive_kl", block_tokens=BLOCK),
                        losses.LayerMap((1,), (1,), 2, 2))  # the pairs are unused: an output-layer term

  def second_pass(t_h, s_h):  # per block: both logits again, the head weight, masked sums
    def one_block(args):
      t, s, m = args
      weight = losses.adaptive_kl_head_weight(t @ t_w, s @ s_w, head_method="threshold")  # sort-free, as before
      stats = head_weight_histogram(weight)
      return {name: jnp.sum(m * value) for name, value in stats.items()}
    per_block = jax.lax.map(one_block, (t_h.reshape(-1, BLOCK, D), s_h.reshape(-1, BLOCK, D),
                                        mask.reshape(-1, BLOCK)))
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_block)

  def term(mode):
    def loss(s_h, s_w):
      if mode == "folded":
        total, _, stats = objective._pair_sums(t_h, s_h, t_w, s_w, mask, "adaptive_kl",
                                               objective.head_weight_statistics)
        return total, stats
      total, _, _ = objective._pair_sums(t_h, s_h, t_w, s_w, mask, "adaptive_kl")
      return total, (second_pass(t_h[0], jax.lax.stop_gradient(s_h[0])) if mode == "second pass" else {})
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)

  results = {}
  for mode in ("no logging", "folded", "second pass"):
    step = jax.jit(term(mode)).lower(s_h, s_w).compile()
    jax.block_until_ready(step(s_h, s_w))
    start = time.process_time()
    for _ in range(REPEATS):
      out = jax.block_until_ready(step(s_h, s_w))
    results[mode] = (time.process_time() - start) / REPEATS, jax.tree.map(jnp.sum, out[0][1])
    print(f"{mode}: temp {step.memory_analysis().temp_size_in_bytes / 2**20:.0f} MiB, "
          f"CPU {results[mode][0]:.2f} s per call", flush=True)
  folded, second = results["folded"][1], results["second pass"][1]
  print(f"folded / no logging: {results['folded'][0] / results['no logging'][0]:.2f}x CPU; "
        f"second pass / no logging: {results['second pass'][0] / results['no logging'][0]:.2f}x CPU; "
        f"mean head weight folded {float(folded['akl_head_weight']) / N:.6f} "
        f"vs second pass {float(second['akl_head_weight']) / N:.6f}")


if __name__ == "__main__":
  main()
