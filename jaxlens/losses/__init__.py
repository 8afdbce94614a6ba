"""Teacher-first divergences and losses for distillation, in pure JAX (jit/grad/vmap/shard_map safe).

Every divergence is ``f(teacher_logits, student_logits, mask=None, *, temperature=1.0, reduction="mean", ...)``:
teacher (the target distribution p) first, student q second — unlike optax's prediction-first order, because each
is read as D(teacher ‖ student) or its reverse. Teacher logits never receive gradient. This package imports
nothing else from jaxlens.
"""

from jaxlens.losses.adaptive_kl import adaptive_kl
from jaxlens.losses.adaptive_kl import adaptive_kl_head_weight
from jaxlens.losses.cross_entropy import cross_entropy
from jaxlens.losses.divergences import DIVERGENCES
from jaxlens.losses.divergences import get_divergence
from jaxlens.losses.jsd import jsd
from jaxlens.losses.kl import forward_kl
from jaxlens.losses.kl import reverse_kl
from jaxlens.losses.layer_map import LayerMap
from jaxlens.losses.layer_map import construction_layer_map
from jaxlens.losses.layer_map import uniform_layer_map
from jaxlens.losses.lens import TileConfig
from jaxlens.losses.lens import lens_loss
from jaxlens.losses.linear_cross_entropy import linear_cross_entropy
from jaxlens.losses.mixture import mix
from jaxlens.losses.reduction import masked_sum_and_count
from jaxlens.losses.reduction import reduce_loss
from jaxlens.losses.skew import skew_kl
from jaxlens.losses.skew import skew_reverse_kl
from jaxlens.losses.tad import tad
from jaxlens.losses.tvd import tvd
from jaxlens.losses.vocab_parallel import vocab_parallel_lens_loss

__all__ = [
    "DIVERGENCES",
    "LayerMap",
    "TileConfig",
    "adaptive_kl",
    "adaptive_kl_head_weight",
    "construction_layer_map",
    "cross_entropy",
    "forward_kl",
    "get_divergence",
    "jsd",
    "lens_loss",
    "linear_cross_entropy",
    "masked_sum_and_count",
    "mix",
    "reduce_loss",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "tad",
    "tvd",
    "uniform_layer_map",
    "vocab_parallel_lens_loss",
]
