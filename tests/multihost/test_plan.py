"""Planning without hardware: target names, analytic counts, and the tiny train step compiled for a TPU slice."""

import importlib.util

import pytest
from flax import nnx

from jaxlens import models
from jaxlens.parallel import targets
from jaxlens.run import model_sources
from jaxlens.train import plan as pl
from jaxlens.run import config as tconfig

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]'; Linux x86-64 only)")


@pytest.mark.parametrize("name, topology, chips, chip", [
    ("v5e:2x2", "v5e:2x2", 4, "TPU v5e"), ("v5e-64", "v5e:8x8", 64, "TPU v5e"), ("v5p-32", "v5p:2x2x4", 16, "TPU v5p"),
    ("v4-8", "v4:2x2x1", 4, "TPU v4"), ("v6e-16", "v6e:4x4", 16, "TPU v6e"), ("V5P:2x2x2", "v5p:2x2x2", 8, "TPU v5p"),
])
def test_parse_target(name, topology, chips, chip):
  target = targets.parse_target(name)
  assert (target.topology, target.num_chips, target.chip.name, target.estimate) == (topology, chips, chip, False)


def test_h100_is_an_estimate_compiled_for_as_many_v5p_chips():
  target = targets.parse_target("h100x8")
  assert target.estimate and target.num_chips == 8 and target.topology == "v5p:2x2x2"
  assert target.chip.hbm_bytes == 80 * 10**9


@pytest.mark.parametrize("bad, match", [("v5e-12", "no standard v5e slice"), ("v7:2x2", "unknown target"),
                                        ("v5p:2x2", "3-D"), ("h100x3", "GPU count"), ("tpu", "unknown target")])
def test_parse_target_rejects(bad, match):
  with pytest.raises(ValueError, match=match):
    targets.parse_target(bad)


@pytest.mark.parametrize("cfg", [
    models.ModelConfig(family="llama", vocab_size=96, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=4, intermediate_size=24, max_position_embeddings=32, norm_eps=1e-5,
                       activation="silu", tie_word_embeddings=False),
    models.ModelConfig(family="gpt2", vocab_size=96, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=4,
                       head_dim=4, intermediate_size=64, max_position_embeddings=32, norm_eps=1e-5,
                       activation="gelu_new", tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
], ids=["llama-untied", "gpt2-tied"])
def test_matmul_params_are_the_models_matrices_plus_the_lm_head(cfg):
  model = nnx.eval_shape(lambda: models.build_model(cfg, rngs=nnx.Rngs(0)))
  matrices = sum(var.get_value().size for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
                 if var.get_value().ndim >= 2 and "bias" not in "/".join(map(str, path)))
  embeddings = cfg.vocab_size * cfg.hidden_size + (cfg.max_position_embeddings * cfg.hidden_size
                                                   if cfg.family == "gpt2" else 0)
  lm_head = cfg.vocab_size * cfg.hidden_size if cfg.tie_word_embeddings else 0
  assert pl.matmul_params(cfg) == matrices - embeddings + lm_head


def test_known_recipe_architectures():
  spec = tconfig.ModelSpec(source="hf", path="gpt2-xl")
  xl = model_sources.model_config(spec, "teacher")
  assert (xl.num_layers, xl.hidden_size, xl.num_heads, xl.vocab_size) == (48, 1600, 25, 50257)
  student = model_sources.model_config(tconfig.ModelSpec(source="teacher_layers", every=3), "student",
                            teacher=model_sources.model_config(tconfig.ModelSpec(source="smollm2"), "teacher"))
  assert student.num_layers == 10
  with pytest.raises(ValueError, match="planning needs the architecture"):
    model_sources.model_config(tconfig.ModelSpec(source="hf", path="no/such-model"), "teacher")


@needs_libtpu
def test_tiny_train_step_compiles_for_v5e_2x2_and_memory_matches_the_parameter_count():
  # vocabulary 512 keeps the TPU compile to seconds; data=2 × fsdp=2 over the 4 chips.
  cfg = tconfig.resolve(["tiny", "teacher.vocab_size=512", "parallel.data=2", "parallel.fsdp=2"])
  result = pl.plan(cfg, targets.parse_target("v5e:2x2"))
  assert result.mesh_shape == {"data": 2, "fsdp": 2, "tensor": 1}

  # Parameter counts from the architecture alone: llama, tied embeddings, 6-block teacher, 3-block student.
  d, v, f, heads, kv, hd = 32, 512, 64, 4, 2, 8
  block = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * f + 2 * d
  assert result.teacher_params == v * d + 6 * block + d
  assert result.student_params == v * d + 3 * block + d

  # Per-chip bytes: fp32 matrices split over fsdp=2 (on their hidden-size axis), the norm scales replicated;
  # Adam's two moments split like the parameters plus two int32 step counts; the fp32 teacher the same way.
  def per_chip(count, layers):
    norms = (2 * layers + 1) * d
    return 4 * ((count - norms) // 2 + norms)
  mem = result.memory
  assert mem["params"] == per_chip(result.student_params, 3)
  assert mem["optimizer"] == 2 * mem["params"] + 2 * 4
  assert mem["teacher"] == per_chip(result.teacher_params, 6)
  assert mem["batch"] == 5 * 4 * (cfg.batch_size // 4) * cfg.data.seq_len  # five [B/4, T] 32-bit arrays
  # The compiler's accounting holds at least those buffers (TPU tiling pads small arrays) and fits a v5e.
  assert mem["total"] >= mem["params"] + mem["optimizer"] + mem["teacher"] + mem["batch"]
  assert result.out_of_memory is None and result.fits
  # XLA's FLOP count (with the tiled kernel's recomputation) agrees with 6·N·tokens-style counting.
  assert 0.8 <= result.compiled_flops / result.analytic_flops["total"] <= 2.5
  report = pl.format_plan(result)
  assert "fits: yes" in report and "v5e:2x2" in report
