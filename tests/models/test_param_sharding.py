"""The logical-axis sharding table: specs mirror the parameter state and a sharded forward is unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, PartitionSpec

from jaxlens.models import ModelConfig, ShardingRules, build_model, param_partition_specs, shard_params

CFG = ModelConfig(family="llama", vocab_size=301, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, intermediate_size=96, max_position_embeddings=32, norm_eps=1e-5, activation="silu",
                  tie_word_embeddings=False)


def mesh():
  return jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(AxisType.Auto, AxisType.Auto))


def test_specs_mirror_the_param_state_and_follow_the_table():
  model = build_model(CFG, rngs=nnx.Rngs(0))
  specs = param_partition_specs(model)
  params = nnx.state(model, nnx.Param)
  assert [p for p, _ in nnx.to_flat_state(specs)] == [p for p, _ in nnx.to_flat_state(params)]
  assert specs["embed"] == PartitionSpec("tensor", "fsdp")
  assert specs["lm_head"] == PartitionSpec("fsdp", "tensor")
  assert specs["blocks"][0]["attn"]["q"] == PartitionSpec("fsdp", "tensor", None)
  assert specs["blocks"][0]["attn"]["o"] == PartitionSpec("tensor", None, "fsdp")
  assert specs["blocks"][1]["mlp"]["down"] == PartitionSpec("tensor", "fsdp")
  assert specs["norm"]["scale"] == PartitionSpec(None)
  replicated_embed = param_partition_specs(model, ShardingRules(embed=None))
  assert replicated_embed["embed"] == PartitionSpec("tensor", None)


def test_mesh_drops_axes_that_do_not_divide_or_do_not_exist():
  model = build_model(CFG, rngs=nnx.Rngs(0))
  specs = param_partition_specs(model, mesh=mesh())
  assert specs["blocks"][0]["attn"]["k"] == PartitionSpec("fsdp", None, None)  # 2 KV heads on 4 tensor devices
  assert specs["embed"] == PartitionSpec(None, "fsdp")  # vocab 301 is not divisible by 4
  data_only = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  specs = param_partition_specs(model, mesh=data_only)
  assert all(s == PartitionSpec(*[None] * len(s)) for s in jax.tree.leaves(specs))


def test_repeated_mesh_axis_raises():
  with pytest.raises(ValueError, match="repeated mesh axis"):
    param_partition_specs(build_model(CFG, rngs=nnx.Rngs(0)), ShardingRules(vocab="fsdp"))


@pytest.mark.parametrize("remat", [True])
def test_sharded_rematerialised_forward_and_grads_equal_plain(remat):
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 301, (4, 8)))
  mask = jnp.ones((4, 8), jnp.int32).at[1, :3].set(0)

  @nnx.jit
  def logits_and_grads(m):
    loss = lambda m: jnp.mean(jax.nn.log_softmax(m(ids, mask).logits)[..., 0])  # noqa: E731
    return m(ids, mask).logits, nnx.grad(loss)(m)

  ref_logits, ref_grads = logits_and_grads(build_model(CFG, rngs=nnx.Rngs(0)))
  model = build_model(CFG, rngs=nnx.Rngs(0), remat=remat)
  shard_params(model, mesh())
  assert len(model.blocks[0].mlp.up[...].sharding.device_set) == 8
  assert model.blocks[0].mlp.up[...].sharding.spec == PartitionSpec("fsdp", "tensor")
  logits, grads = logits_and_grads(model)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
    np.testing.assert_allclose(g, r, atol=1e-5)
