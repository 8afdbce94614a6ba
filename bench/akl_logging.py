"""Cost of logging AKL's per-token head weight in the train step: one ``[N, V]`` block vs ``block_tokens`` blocks.

``python bench/akl_logging.py`` prints compiled temporary memory and process CPU time per call of
``Objective.head_weight_sums`` at SmolLM2 shapes (D 576, V 49,152), N = 2048 tokens, with one block of all N tokens
(what materialising the logits cost) and with 256-token blocks (the train step's ``lax.map``).
"""

import time

import jax
import jax.numpy as jnp

from jaxlens import losses
from jaxlens.run.config import LossConfig
from jaxlens.train.objective import Objective

N, D, V, REPEATS = 2048, 576, 49152, 3


def main() -> None:
  k = jax.random.split(jax.random.key(0), 4)
  args = (jax.random.normal(k[0], (N, D)), jax.random.normal(k[1], (N, D)), 0.05 * jax.random.normal(k[2], (D, V)),
          0.05 * jax.random.normal(k[3], (D, V)), jnp.ones((N,)))
  pairs = losses.LayerMap((1,), (1,), 2, 2)  # unused: the head weight is an output-layer quantity
  for block in (N, 256):
    objective = Objective(LossConfig(output_divergence="adaptive_kl", block_tokens=block), pairs)
    step = jax.jit(objective.head_weight_sums).lower(*args).compile()
    step(*args)["akl_head_weight"].block_until_ready()
    start = time.process_time()
    for _ in range(REPEATS):
      step(*args)["akl_head_weight"].block_until_ready()
    print(f"block_tokens {block}: temp {step.memory_analysis().temp_size_in_bytes / 2**20:.0f} MiB, "
          f"CPU {(time.process_time() - start) / REPEATS:.2f} s per call")


if __name__ == "__main__":
  main()
