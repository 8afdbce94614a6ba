"""Teacher-first divergences and losses for distillation, in pure JAX (jit/grad/vmap/shard_map safe).

Every divergence is ``f(teacher_logits, student_logits, mask=None, *, temperature=1.0, reduction="mean", ...)``:
teacher (the target distribution p) first, student q second — unlike optax's prediction-first order, because each
is read as D(teacher ‖ student) or its reverse. Teacher logits never receive gradient. This package imports
nothing else from jaxlens.

The per-token arithmetic on log-probabilities lives in :mod:`jaxlens.losses.per_token` (shared with eval's
alignment metrics) and the AKL head set in :mod:`jaxlens.losses.head_set`. A NaN or ``+inf`` logit (or a row of
only ``-inf``) at an unmasked token makes a loss NaN; masked tokens contribute exactly nothing, value and gradient.
"""

from jaxlens.losses import head_set
from jaxlens.losses import per_token
from jaxlens.losses.adaptive_kl import adaptive_kl
from jaxlens.losses.adaptive_kl import adaptive_kl_head_weight
from jaxlens.losses.adaptive_kl import adaptive_kl_weights
from jaxlens.losses.cross_entropy import cross_entropy
from jaxlens.losses.divergences import DIVERGENCES
from jaxlens.losses.divergences import get_divergence
from jaxlens.losses.finite import check_finite
from jaxlens.losses.head_set import HEAD_RULES
from jaxlens.losses.head_set import head_mask
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
from jaxlens.losses.per_token import AKLWeights
from jaxlens.losses.reduction import masked_sum_and_count
from jaxlens.losses.reduction import reduce_loss
from jaxlens.losses.skew import skew_kl
from jaxlens.losses.skew import skew_reverse_kl
from jaxlens.losses.tad import tad
from jaxlens.losses.tvd import tvd
from jaxlens.losses.vocab_parallel import vocab_parallel_lens_loss

__all__ = [
    "AKLWeights",
    "DIVERGENCES",
    "HEAD_RULES",
    "LayerMap",
    "TileConfig",
    "adaptive_kl",
    "adaptive_kl_head_weight",
    "adaptive_kl_weights",
    "check_finite",
    "construction_layer_map",
    "cross_entropy",
    "forward_kl",
    "get_divergence",
    "head_mask",
    "head_set",
    "jsd",
    "lens_loss",
    "linear_cross_entropy",
    "masked_sum_and_count",
    "mix",
    "per_token",
    "reduce_loss",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "tad",
    "tvd",
    "uniform_layer_map",
    "vocab_parallel_lens_loss",
]
