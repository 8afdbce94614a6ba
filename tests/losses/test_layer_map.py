"""Layer maps: DistillLens's reference lists (distilllens.md §1.3) come out of ``uniform_layer_map``; bad maps raise."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlens.losses import LayerMap
from jaxlens.losses import uniform_layer_map


@pytest.mark.parametrize("teacher, student, kwargs, teacher_layers, student_layers", [
    # GPT-2 XL (48) -> GPT-2 base (12): scripts/gpt2/distill_lens/train_base.sh
    (48, 12, {}, (8, 16, 24, 32, 40), (2, 4, 6, 8, 10)),
    # GPT-2 XL (48) -> GPT-2 medium (24): train_medium.sh
    (48, 24, {}, (8, 16, 24, 32, 40), (4, 8, 12, 16, 20)),
    # LLaMA-7B (32, floor) -> TinyLlama-1.1B (22, round): scripts/llama/distill_lens/train_1B_7B.sh
    (32, 22, {"teacher_rounding": "floor"}, (5, 10, 16, 21, 26), (4, 7, 11, 15, 18)),
    # Qwen2.5-3B (36) -> 1.5B (28), four pairs, round: scripts/qwen2.5/distill_lens/train_1.5B_3B.sh
    (36, 28, {"num_pairs": 4}, (7, 14, 22, 29), (6, 11, 17, 22)),
    # SmolLM2-135M (30) -> a 10-layer student: k·10/6 = 1.67, 3.33, 5, 6.67, 8.33
    (30, 10, {}, (5, 10, 15, 20, 25), (2, 3, 5, 7, 8)),
    (30, 10, {"student_rounding": "floor"}, (5, 10, 15, 20, 25), (1, 3, 5, 6, 8)),
    (48, 12, {"teacher_rounding": "exact", "student_rounding": "exact"}, (8, 16, 24, 32, 40), (2, 4, 6, 8, 10)),
])
def test_uniform_layer_map_reproduces_reference_lists(teacher, student, kwargs, teacher_layers, student_layers):
  layer_map = uniform_layer_map(teacher, student, **kwargs)
  assert layer_map.teacher_layers == teacher_layers
  assert layer_map.student_layers == student_layers
  assert layer_map.num_pairs == len(teacher_layers)


def test_round_is_half_up_not_bankers():
  # 2·3/4 = 1.5 -> 2 and 9/2 = 4.5 -> 5 (Python's banker's round would give 4).
  assert uniform_layer_map(3, 3, num_pairs=3).teacher_layers == (1, 2, 2)
  assert uniform_layer_map(9, 9, num_pairs=1).teacher_layers == (5,)


@pytest.mark.parametrize("args, kwargs, message", [
    ((32, 22), {"teacher_rounding": "exact"}, "not an integer"),
    ((32, 22), {"student_rounding": "ceil"}, "student_rounding"),
    ((32, 22, 0), {}, "num_pairs"),
    ((0, 22), {}, "teacher_num_layers"),
])
def test_uniform_layer_map_errors(args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    uniform_layer_map(*args, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(teacher_layers=(1, 2), student_layers=(1,)), "equal lengths"),
    (dict(teacher_layers=(), student_layers=()), "at least one pair"),
    (dict(teacher_layers=(49,), student_layers=(1,)), r"teacher layer index 49 is outside \[0, 48\]"),
    (dict(teacher_layers=(8,), student_layers=(-1,)), r"student layer index -1 is outside \[0, 12\]"),
    (dict(teacher_layers=(8.0,), student_layers=(1,)), "must hold ints"),
    (dict(teacher_layers=(8,), student_layers=(1,), student_num_layers=0), "student_num_layers"),
])
def test_layer_map_validation(kwargs, message):
  full = dict(teacher_num_layers=48, student_num_layers=12) | kwargs
  with pytest.raises(ValueError, match=message):
    LayerMap(**full)


def test_layer_map_accepts_lists_and_boundary_indices():
  layer_map = LayerMap(teacher_layers=[0, 48], student_layers=[0, 12], teacher_num_layers=48, student_num_layers=12)
  assert layer_map.teacher_layers == (0, 48) and layer_map.student_layers == (0, 12)
  hash(layer_map)


def test_gather_stacks_the_paired_hidden_states():
  layer_map = LayerMap(teacher_layers=(2, 4), student_layers=(1, 3), teacher_num_layers=4, student_num_layers=3)
  teacher_states = tuple(jnp.full((2, 3, 5), float(i)) for i in range(5))
  student_states = tuple(jnp.full((2, 3, 4), float(i)) for i in range(4))
  teacher, student = layer_map.gather(teacher_states, student_states)
  assert teacher.shape == (2, 2, 3, 5) and student.shape == (2, 2, 3, 4)
  np.testing.assert_array_equal(np.asarray(teacher[:, 0, 0, 0]), [2.0, 4.0])
  np.testing.assert_array_equal(np.asarray(student[:, 0, 0, 0]), [1.0, 3.0])
  with pytest.raises(ValueError, match="has 4 entries"):
    layer_map.gather(teacher_states[:4], student_states)


def test_construction_map_follows_the_kept_blocks():
  from jaxlens.losses import construction_layer_map
  m = construction_layer_map(range(0, 30, 3), 30)  # SmolLM2 student of every third block
  assert (m.teacher_layers, m.student_layers) == ((4, 7, 13, 19, 22), (2, 3, 5, 7, 8))
  # student hidden state s went through teacher blocks kept[0..s-1]: it pairs with the state after kept[s-1]
  kept = [0, 1, 4, 8, 12, 16, 20, 24, 28, 29]
  m = construction_layer_map(kept, 30, 3)
  assert all(t == kept[s - 1] + 1 for t, s in zip(m.teacher_layers, m.student_layers))
  assert (m.teacher_num_layers, m.student_num_layers) == (30, 10)
  for bad in ([], [3, 1], [0, 30], [2, 2]):
    with pytest.raises(ValueError, match="kept_blocks"):
      construction_layer_map(bad, 30)
