"""Test helper: tiny run folders (a byte-level tokenizer folder, random teachers, real ``train.py`` checkpoints)."""

from __future__ import annotations

import json
import pathlib

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 272  # > the tokenizer's 262 tokens: exported models keep the padded vocabulary


def write_tokenizer_folder(folder: pathlib.Path) -> pathlib.Path:
  """A byte-level BPE (3 ChatML specials, the 256 byte symbols, 3 merges) with EOS = PAD = ``<|im_end|>``."""
  folder.mkdir(parents=True, exist_ok=True)
  symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
  merges = [("Ġ", "t"), ("e", "r"), ("h", "e")]
  vocab = {t: i for i, t in enumerate(SPECIALS + symbols + ["".join(m) for m in merges])}
  backend = tokenizers.Tokenizer(models.BPE(vocab, merges))
  backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False)])
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
  backend.save(str(folder / "tokenizer.json"))
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}))
  return folder


def train_tiny_run(run_dir: pathlib.Path, tokenizer: pathlib.Path, *, family: str = "llama", steps: int = 2,
                   **overrides) -> pathlib.Path:
  """``python train.py`` on a random 4-block ``family`` teacher and its blocks 0, 2 as the student (chatterbot)."""
  from jaxlens.run import config as tconfig
  from jaxlens.train.trainer import train

  values = {"teacher.source": "random", "teacher.family": family, "teacher.vocab_size": VOCAB,
            "teacher.hidden_size": 32, "teacher.num_layers": 4, "teacher.num_heads": 4,
            "teacher.num_kv_heads": 4 if family == "gpt2" else 2, "teacher.head_dim": 8,
            "teacher.intermediate_size": 48, "student.source": "teacher_layers", "student.every": 2,
            "data.tokenizer": str(tokenizer), "data.seq_len": 48, "data.max_prompt_len": 32, "steps": steps,
            "batch_size": 8, "log_every": 1, "eval_batches": 1, "loss.num_lens_pairs": 1, "loss.block_tokens": 64,
            "optim.lr": 3e-2, "progress": False, "out_dir": str(run_dir), **overrides}
  train(tconfig.build_config(tconfig.TrainConfig, values))
  return run_dir


def save_run(run_dir: pathlib.Path, teacher, student, data: dict, *, step: int = 1, family: str | None = None):
  """A run folder with one checkpoint of ``student`` in the ``train.py`` format, written without training.

  ``family`` overrides the stored student architecture name (to test refusals of unknown architectures).
  """
  import dataclasses

  import numpy as np
  from flax import nnx

  from jaxlens.run import checkpoints
  from jaxlens.run import config as tconfig

  cfg = tconfig.build_config(tconfig.TrainConfig, {"out_dir": str(run_dir), **{f"data.{k}": v for k, v in data.items()}})
  student_model = dataclasses.asdict(student.config)
  if family is not None:
    student_model["family"] = family
  manager = checkpoints.open_manager(str(run_dir))
  checkpoints.save(manager, step, params={"student": nnx.to_pure_dict(nnx.state(student, nnx.Param))},
                   opt_state={"count": np.zeros((), np.int32)}, train={"step": np.int32(step)}, data={},
                   config=tconfig.to_dict(cfg),
                   run={"teacher_model": dataclasses.asdict(teacher.config), "student_model": student_model,
                        "layer_pairs": [[teacher.config.num_layers, student.config.num_layers]]})
  manager.wait_until_finished()
  manager.close()
  return run_dir


def gpt2_models(seed: int = 0):
  """A random 4-block GPT-2 teacher and its layer-dropped student (blocks 0, 2) with O(1) weights (noise 0.3 added),
  so that logits are far from uniform and comparisons mean something."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from jaxlens.run import model_sources
  from jaxlens.run.config import ModelSpec

  spec = ModelSpec(source="random", family="gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=4, num_heads=4,
                   num_kv_heads=4, head_dim=8, intermediate_size=48, seed=seed)
  teacher = model_sources.load_teacher(spec)
  student = model_sources.make_student(ModelSpec(source="teacher_layers", every=2), teacher)
  rng = np.random.default_rng(seed)
  state = nnx.state(student, nnx.Param)
  nnx.update(student, jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype), state))
  return teacher, student
