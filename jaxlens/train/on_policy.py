"""On-policy (mixed-policy) batches: the current student samples the responses of a random share λ of the rows.

GKD's rule (Agarwal et al., 2024; TRL's ``GKDTrainer`` draws one coin per *batch*, here one per *sequence*):

.. math::

   s_b \\sim \\mathrm{Bernoulli}(\\lambda), \\qquad
   y_b = \\begin{cases} \\hat y_b \\sim q_\\theta(\\cdot \\mid x_b) & s_b = 1 \\\\ y_b^\\text{data} & s_b = 0 \\end{cases}

with x_b the row's prompt and ŷ_b decoded by :func:`jaxlens.models.generate` (KV cache, temperature, top-p,
``max_new_tokens``) and cut after its first EOS (the EOS is a response token, as in the data pipeline; a response
that never emits EOS keeps all ``max_new_tokens`` tokens). Teacher and student then score the same rows, so the
objective's terms run over the sampled response tokens exactly as over dataset responses.

Rows keep the data pipeline's layout (:mod:`jaxlens.data.batching`): right-padded, positions ``0 … n−1``,
``labels[t] = ids[t+1]``, ``loss_mask = 1`` on ``p − 1 ≤ t < n − 1`` (p prompt tokens, n real tokens). The prompt
of a row is its first ``p`` tokens, where ``p − 1`` is the first position of ``loss_mask``; rows without a response
(all-padding rows of a partial batch) are never sampled.

Randomness: the coins and the sampling key come from ``fold_in(run_rng_of_this_step, 2)`` (the step itself
advances the run's key with ``fold_in(·, 1)``), so a resumed run draws the same rows and tokens. Tokens are
integers: no gradient flows through sampling (the parameters used to sample are also ``stop_gradient``).

Sampling is one jitted program over the batch as it is sharded (each data shard decodes its own rows); it decodes
every row (static shapes) and keeps the sampled ones.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlens import models
from jaxlens.models import generate
from jaxlens.data import BATCH_KEYS
from jaxlens.run import model_sources
from jaxlens.train.step import ModelParts

RNG_STREAM = 2


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Static sampling settings (hashable: part of the compiled program).

  Attributes:
    fraction: λ, the probability that a row's response is sampled.
    max_new_tokens: N, the most tokens decoded per response.
    prompt_width: W ≥ every prompt length (``data.max_prompt_len``); W + N ≤ the row length.
    temperature: τ ≥ 0 (0: greedy).
    top_p: nucleus mass in (0, 1].
    eos_ids: tokens that end a response.
    pad_id: the padding id.
  """

  fraction: float
  max_new_tokens: int
  prompt_width: int
  temperature: float = 1.0
  top_p: float = 1.0
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0


def prompt_lengths(batch: dict) -> jax.Array:
  """``[B]`` int32: p = 1 + the first position of ``loss_mask`` (rows without one: their real tokens, ≥ 1)."""
  mask = batch["loss_mask"] > 0
  real = batch["attention_mask"].sum(-1).astype(jnp.int32)
  return jnp.maximum(jnp.where(mask.any(-1), jnp.argmax(mask, -1).astype(jnp.int32) + 1, real), 1)


def left_aligned_prompts(input_ids: jax.Array, lengths: jax.Array, width: int, pad_id: int):
  """Row b's first ``lengths[b]`` tokens moved to the right edge of ``[B, width]`` (generation's layout).

  Returns:
    ``(ids, mask)`` int32 ``[B, width]``: ``ids[b, j] = input_ids[b, j − (width − p_b)]`` for
    ``j ≥ width − p_b``, ``pad_id`` and mask 0 before.
  """
  j = jnp.arange(width)[None, :]
  src = j - (width - lengths[:, None])  # [B, W]
  real = src >= 0
  ids = jnp.take_along_axis(input_ids, jnp.clip(src, 0, input_ids.shape[1] - 1), axis=1)
  return jnp.where(real, ids, pad_id).astype(jnp.int32), real.astype(jnp.int32)


def response_lengths(new_tokens: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
  """``[B]`` int32: generated tokens up to and including the first EOS (all N when there is none)."""
  n = new_tokens.shape[1]
  if not eos_ids:
    return jnp.full(new_tokens.shape[:1], n, jnp.int32)
  is_eos = jnp.isin(new_tokens, jnp.asarray(eos_ids, jnp.int32))
  return jnp.where(is_eos.any(-1), jnp.argmax(is_eos, -1) + 1, n).astype(jnp.int32)


def rows_from_generation(sequences: jax.Array, prompt_len: jax.Array, width: int, seq_len: int,
                         eos_ids: tuple[int, ...], pad_id: int) -> dict:
  """Right-padded batch rows ``[B, seq_len]`` (data layout) from :func:`generate`'s ``[B, W + N]`` output.

  Row b is ``prompt_b ++ response_b`` with n_b = p_b + g_b real tokens (g_b from :func:`response_lengths`):
  ``ids[t] = sequences[t + W − p_b]`` for t < n_b, ``labels[t] = ids[t+1]``, ``loss_mask[t] = [p_b − 1 ≤ t < n_b − 1]``.
  """
  g = response_lengths(sequences[:, width:], eos_ids)
  n = prompt_len + g  # [B] ≤ W + N ≤ seq_len
  t = jnp.arange(seq_len)[None, :]
  real = t < n[:, None]
  src = jnp.clip(t + width - prompt_len[:, None], 0, sequences.shape[1] - 1)
  ids = jnp.where(real, jnp.take_along_axis(sequences, src, axis=1), pad_id).astype(jnp.int32)
  labels = jnp.concatenate([ids[:, 1:], jnp.full_like(ids[:, :1], pad_id)], axis=1)
  labels = jnp.where(t < n[:, None] - 1, labels, pad_id)
  return {"input_ids": ids, "attention_mask": real.astype(jnp.int32), "positions": jnp.where(real, t, 0).astype(jnp.int32),
          "labels": labels, "loss_mask": ((t >= prompt_len[:, None] - 1) & (t < n[:, None] - 1)).astype(jnp.float32)}


def sample_rows(model, batch: dict, key: jax.Array, sampling: Sampling) -> dict:
  """Every row's prompt continued by ``model`` (a :class:`~jaxlens.models.base.CausalLM`), in the data layout.

  Args:
    model: the model that samples (student for on-policy rows, teacher for SeqKD).
    batch: a data ``Batch`` ``[B, T]`` (only the prompts are read).
    key: PRNG key of :func:`jaxlens.models.generate`.
    sampling: the settings; requires ``prompt_width + max_new_tokens ≤ T``.
  """
  seq_len = batch["input_ids"].shape[1]
  if sampling.prompt_width + sampling.max_new_tokens > seq_len:
    raise ValueError(f"prompt width {sampling.prompt_width} + max_new_tokens {sampling.max_new_tokens} exceeds "
                     f"the row length {seq_len}")
  lengths = prompt_lengths(batch)
  ids, mask = left_aligned_prompts(batch["input_ids"], lengths, sampling.prompt_width, sampling.pad_id)
  sequences = generate(model, ids, mask, sampling.max_new_tokens, key, temperature=sampling.temperature,
                       top_p=sampling.top_p, eos_id=sampling.eos_ids or None, pad_id=sampling.pad_id)
  return rows_from_generation(jax.lax.stop_gradient(sequences), lengths, sampling.prompt_width, seq_len,
                              sampling.eos_ids, sampling.pad_id)


def sampling_keys(rng_data: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(coin_key, generate_key)`` of a step from the run's key data ``[2]`` (stream :data:`RNG_STREAM`)."""
  coins, draw = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(rng_data), RNG_STREAM))
  return coins, draw


def mix_batch(student_model, batch: dict, rng_data: jax.Array, sampling: Sampling) -> tuple[dict, dict]:
  """The step's mixed batch: rows with s_b = 1 (and a response) replaced by the student's samples.

  Returns:
    ``(batch, stats)``: the batch (``BATCH_KEYS``) and float32 scalars ``sampled_rows`` (rows replaced),
    ``generated_tokens`` (response tokens of the replaced rows, EOS included) and ``tokens`` (real tokens of the
    mixed batch).
  """
  coin_key, draw_key = sampling_keys(rng_data)
  has_response = batch["loss_mask"].sum(-1) > 0
  chosen = jax.random.bernoulli(coin_key, sampling.fraction, has_response.shape) & has_response  # [B]
  sampled = sample_rows(student_model, batch, draw_key, sampling)
  mixed = {k: jnp.where(chosen[:, None], sampled[k], batch[k]).astype(batch[k].dtype) for k in BATCH_KEYS}
  generated = jnp.where(chosen, sampled["loss_mask"].sum(-1), 0.0)  # response tokens = loss positions
  stats = {"sampled_rows": chosen.sum().astype(jnp.float32), "generated_tokens": generated.sum(),
           "tokens": mixed["attention_mask"].sum().astype(jnp.float32)}
  return mixed, stats


def make_mixer(sampler: ModelParts, sampling: Sampling):
  """The (un-jitted) ``(student_params, rng_data, batch) -> (batch, stats)`` of :func:`mix_batch`.

  ``sampler`` is the student's structure in the sampling dtype (its parameters are the training state's
  float32 student parameters, cast by each layer to the compute dtype).
  """
  def mix(student_params, rng_data, batch):
    model = sampler.merge(jax.lax.stop_gradient(student_params))
    return mix_batch(model, batch, rng_data, sampling)
  return mix


def sampler_parts(student, dtype) -> ModelParts:
  """The student's structure computing in ``dtype`` (no weights are allocated: shapes only)."""
  return ModelParts.of(nnx.eval_shape(lambda: models.build_model(student.config, rngs=nnx.Rngs(0), dtype=dtype)))


class Mixer:
  """The jitted :func:`mix_batch` of a run, timed: ``mixer(state, batch) -> (batch, metrics, real_tokens)``.

  Metrics (floats, this step): ``on_policy/sampled_rows``, ``on_policy/generated_tokens``, ``on_policy/sample_ms``
  (wall time of the sampling program alone: the previous step is awaited first) and
  ``on_policy/generated_tokens_per_s`` (kept response tokens per second of sampling).
  """

  def __init__(self, sampler: ModelParts, sampling: Sampling, batch_sharding, replicated):
    self.sampling = sampling
    shardings = {k: batch_sharding for k in BATCH_KEYS}
    self._fn = jax.jit(make_mixer(sampler, sampling), out_shardings=(shardings, replicated))

  def __call__(self, state: dict, batch: dict) -> tuple[dict, dict[str, float], int]:
    jax.block_until_ready((state["params"], state["rng"]))
    t0 = time.perf_counter()
    mixed, stats = self._fn(state["params"]["student"], state["rng"], batch)
    stats = {k: float(v) for k, v in jax.device_get(stats).items()}
    seconds = max(time.perf_counter() - t0, 1e-9)
    return mixed, {"on_policy/sampled_rows": stats["sampled_rows"],
                   "on_policy/generated_tokens": stats["generated_tokens"],
                   "on_policy/sample_ms": 1000.0 * seconds,
                   "on_policy/generated_tokens_per_s": stats["generated_tokens"] / seconds}, int(stats["tokens"])


def run_mixer(cfg, student, mesh) -> Mixer | None:
  """The :class:`Mixer` of a training config (``None`` when ``data.on_policy_fraction`` is 0).

  The sampling dtype is ``data.sampling_dtype`` (``auto``: bfloat16 on an accelerator, else
  ``precision.compute``); EOS and padding are the data tokenizer's.
  """
  data = cfg.data
  if data.on_policy_fraction == 0:
    return None
  from jaxlens.parallel import mesh as pmesh
  tokenizer = model_sources.load_run_tokenizer(data)
  name = data.sampling_dtype
  if name == "auto":
    name = "bfloat16" if jax.default_backend() != "cpu" else cfg.precision.compute
  sampling = Sampling(fraction=data.on_policy_fraction, max_new_tokens=data.new_tokens,
                      prompt_width=data.max_prompt_len, temperature=data.sample_temperature, top_p=data.sample_top_p,
                      eos_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
  return Mixer(sampler_parts(student, jnp.dtype(name)), sampling, pmesh.batch_sharding(mesh), pmesh.replicated(mesh))
