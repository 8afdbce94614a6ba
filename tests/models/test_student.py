"""student_from_teacher: a shallower copy of the teacher that computes exactly the teacher's kept blocks."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_tiny import batch, hf_model, llama_config, save, torch_forward
from jaxlens.models import ModelConfig, build_model, from_pretrained, student_from_teacher


@pytest.fixture(scope="module")
def teacher_pair(tmp_path_factory):
  hf = hf_model(llama_config(num_hidden_layers=5))
  return hf, from_pretrained(save(hf, tmp_path_factory.mktemp("teacher")))


def test_every_1_reproduces_the_teacher(teacher_pair):
  _, teacher = teacher_pair
  student, kept = student_from_teacher(teacher, every=1)
  assert kept == (0, 1, 2, 3, 4) and student.config == teacher.config
  ids, mask, _ = batch(0, 2, 6, "left")
  t_out, s_out = teacher(jnp.asarray(ids), jnp.asarray(mask)), student(jnp.asarray(ids), jnp.asarray(mask))
  for t_h, s_h in zip(t_out.hidden_states, s_out.hidden_states, strict=True):
    np.testing.assert_array_equal(s_h, t_h)
  np.testing.assert_array_equal(s_out.logits, t_out.logits)


@pytest.mark.parametrize("kwargs, expected", [(dict(every=2), (0, 2, 4)), (dict(every=3, offset=1), (1, 4)),
                                              (dict(keep_layers=[0, 3]), (0, 3))])
def test_student_equals_the_teacher_with_only_the_kept_blocks(teacher_pair, kwargs, expected):
  """Reference: the HF teacher with its other decoder layers deleted."""
  hf, teacher = teacher_pair
  student, kept = student_from_teacher(teacher, **kwargs)
  assert kept == expected and student.config.num_layers == len(kept)
  hf_student = hf_model(llama_config(num_hidden_layers=len(kept)))
  hf_student.load_state_dict({k: v for k, v in hf.state_dict().items() if ".layers." not in k}, strict=False)
  for j, i in enumerate(kept):
    hf_student.model.layers[j].load_state_dict(hf.model.layers[i].state_dict())
  ids, mask, pos = batch(1, 2, 6, "left")
  ref_logits, ref_hidden = torch_forward(hf_student, ids, mask, pos)
  out = student(jnp.asarray(ids), jnp.asarray(mask))
  real = mask.astype(bool)
  for h, ref in zip(out.hidden_states, ref_hidden, strict=True):
    np.testing.assert_allclose(np.asarray(h)[real], ref[real], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(out.logits)[real], ref_logits[real], atol=1e-4, rtol=1e-4)


def test_every_third_layer_keeps_dtype_remat_and_copies_params():
  cfg = ModelConfig(family="llama", vocab_size=17, hidden_size=8, num_layers=9, num_heads=2, num_kv_heads=1,
                    head_dim=4, intermediate_size=8, max_position_embeddings=16, norm_eps=1e-5, activation="silu")
  teacher = build_model(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, remat="dots")
  student, kept = student_from_teacher(teacher, every=3)
  assert kept == (0, 3, 6) and student.config.num_layers == 3
  assert (student.dtype, student.remat) == (jnp.bfloat16, "dots")
  np.testing.assert_array_equal(student.blocks[2].mlp.up[...], teacher.blocks[6].mlp.up[...])
  student.blocks[2].mlp.up[...] = jnp.zeros_like(student.blocks[2].mlp.up[...])
  assert np.abs(np.asarray(teacher.blocks[6].mlp.up[...])).sum() > 0  # a copy, not shared state


@pytest.mark.parametrize("kwargs", [dict(every=0), dict(offset=5), dict(keep_layers=[]), dict(keep_layers=[2, 1]),
                                    dict(keep_layers=[0, 5]), dict(keep_layers=[1, 1])])
def test_bad_layer_selection_raises(teacher_pair, kwargs):
  with pytest.raises(ValueError, match="every|keep_layers"):
    student_from_teacher(teacher_pair[1], **kwargs)
