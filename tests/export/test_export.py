"""python -m jaxlens.export: HF folders and GGUF files that transformers and jaxlens read back with equal logits."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from jaxlens import data, models
from jaxlens.export import cli, core
from jaxlens.export.hf import NUMPY_DTYPES
from jaxlens.models.gguf import read_gguf_tokenizer
from jaxlens.run import checkpoints
from jaxlens.run import model_sources
from jaxlens.run.config import ModelSpec
from tiny_runs import gpt2_models, save_run, train_tiny_run, write_tokenizer_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

IDS = np.array([[5, 60, 70, 261, 100, 3, 200, 17, 271], [9, 8, 7, 6, 5, 4, 3, 2, 1]])
TEXT = "Hello there 12 <|im_start|>user\nwhat?<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return write_tokenizer_folder(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, tokenizer_dir):
  """A real train.py run: random 4-block Llama teacher, student of its blocks 0 and 2, one step."""
  return train_tiny_run(tmp_path_factory.mktemp("llama") / "run", tokenizer_dir, steps=1)


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, tokenizer_dir):
  """A layer-dropped GPT-2 student (blocks 0 and 2 of 4) saved in the train.py checkpoint format."""
  teacher, student = gpt2_models()
  return save_run(tmp_path_factory.mktemp("gpt2") / "run", teacher, student,
                  {"tokenizer": str(tokenizer_dir), "template": "alpaca"})


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


def _logits(model, ids=IDS):
  return np.asarray(model(jnp.asarray(ids)).logits, np.float32)


def _torch_logits(model, ids=IDS):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


def _assert_hf_folder_matches(run_dir, out, template):
  student, info = model_sources.load_run_student(str(run_dir))
  ours = model_sources.load_run_tokenizer(info.config.data)
  assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
  hf = transformers.AutoModelForCausalLM.from_pretrained(out)  # no trust_remote_code: stock classes only
  assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[student.config.family]
  reference = _logits(student)
  assert np.abs(reference).max() > 0.3  # a real comparison, not two near-zero tensors
  np.testing.assert_allclose(_torch_logits(hf), reference, atol=1e-4, rtol=0)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert tok(TEXT)["input_ids"] == ours.encode(TEXT)
  assert (tok.eos_token_id, tok.pad_token_id) == (ours.eos_id, ours.pad_id)
  chat = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                                 tokenize=False)
  assert chat == data.format_prompt({"instruction": "Name a colour."}, template)
  for source in (models.from_pretrained(out), model_sources.make_student(ModelSpec(source="hf", path=str(out)), None)):
    assert all(np.array_equal(a, b) for a, b in zip(_params(source), _params(student), strict=True))


def test_hf_export_of_a_trained_llama_run(llama_run, tmp_path, capsys):
  out = tmp_path / "hf"
  assert cli.main([str(llama_run), str(out)]) == 0
  assert "exported 6 files" in capsys.readouterr().out
  _assert_hf_folder_matches(llama_run, out, "chatml")
  assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2  # <|im_end|>


def test_hf_export_of_a_layer_dropped_gpt2_student(gpt2_run, tmp_path):
  out = tmp_path / "hf"
  core.export_run(str(gpt2_run), str(out))
  assert json.loads((out / "config.json").read_text())["n_layer"] == 2
  _assert_hf_folder_matches(gpt2_run, out, "alpaca")


def test_bfloat16_export_stores_the_rounded_weights(gpt2_run, tmp_path):
  out = tmp_path / "bf16"
  core.export_run(str(gpt2_run), str(out), dtype="bfloat16")
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  assert {v.dtype for v in models.read_safetensors(str(out)).values()} == {np.dtype(ml_dtypes.bfloat16)}
  student, _ = model_sources.load_run_student(str(gpt2_run))
  back = models.from_pretrained(str(out))
  for a, b in zip(_params(back), _params(student), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(ml_dtypes.bfloat16).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gguf_export_reads_back_in_jaxlens_and_transformers(llama_run, tmp_path, dtype):
  out = tmp_path / "gguf"
  assert cli.main([str(llama_run), str(out), "format=gguf", f"dtype={dtype}"]) == 0
  assert os.listdir(out) == ["model.gguf"]
  student, info = model_sources.load_run_student(str(llama_run))
  back = models.load_gguf(out / "model.gguf")
  assert back.config.num_layers == 2
  for a, b in zip(_params(back), _params(student), strict=True):
    b = np.asarray(b)
    expected = b if b.ndim == 1 else b.astype(NUMPY_DTYPES[dtype]).astype(np.float32)  # norms stay F32
    np.testing.assert_array_equal(np.asarray(a), expected)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf")
  np.testing.assert_allclose(_torch_logits(hf), _logits(back), atol=1e-4, rtol=0)
  run_tokenizer = model_sources.load_run_tokenizer(info.config.data)
  assert len(read_gguf_tokenizer(out / "model.gguf")["tokens"]) == back.config.vocab_size  # padded
  assert models.load_tokenizer(out / "model.gguf").encode(TEXT) == run_tokenizer.encode(TEXT)
  gguf_tok = transformers.AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
  assert gguf_tok(TEXT, add_special_tokens=False)["input_ids"] == run_tokenizer.encode(TEXT)


def _refusal(argv, capsys):
  status = cli.main([str(a) for a in argv])
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  return status, errors


def _tree(path):
  return sorted(os.path.relpath(os.path.join(root, f), path) for root, dirs, files in os.walk(path)
                for f in files + dirs) if os.path.exists(path) else None


@pytest.mark.parametrize("case,match", [
    ("no checkpoint", "no checkpoints in"), ("non-empty", "is not empty"), ("under a file", "is not a folder"),
    ("gpt2 as gguf", "GGUF export supports the architectures"), ("unknown architecture", "unknown student architecture 'mamba'"),
    ("bad dtype", "dtype='int8' is not one of"), ("unknown key", "did you mean 'overwrite'"),
    ("one folder", "expected RUN_DIR and OUT_DIR"), ("non-finite", "NaN or inf")])
def test_refusals_print_one_error_line_and_write_nothing(case, match, gpt2_run, tokenizer_dir, tmp_path, capsys,
                                                       monkeypatch):
  run, out, extra = gpt2_run, tmp_path / "out", []
  if case == "no checkpoint":
    run = tmp_path / "empty_run"
    run.mkdir()
  elif case == "non-empty":
    out.mkdir()
    (out / "keep.txt").write_text("mine")
  elif case == "under a file":
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
  elif case == "gpt2 as gguf":
    extra = ["format=gguf"]
  elif case == "unknown architecture":
    teacher, student = gpt2_models()
    run = save_run(tmp_path / "mamba_run", teacher, student, {"tokenizer": str(tokenizer_dir)}, family="mamba")
  elif case == "non-finite":  # a NaN checkpoint, as code older than save()'s finiteness check could write one
    teacher, student = gpt2_models()
    student.blocks[1].mlp.up[...] = student.blocks[1].mlp.up[...].at[0, 0].set(jnp.nan)
    digests = checkpoints.array_digests
    monkeypatch.setattr(checkpoints, "array_digests", lambda tree: (digests(tree)[0], []))
    run = save_run(tmp_path / "nan_run", teacher, student, {"tokenizer": str(tokenizer_dir)})
    monkeypatch.undo()
  elif case == "bad dtype":
    extra = ["dtype=int8"]
  elif case == "unknown key":
    extra = ["overwite=true"]
  before = _tree(tmp_path)
  argv = [run] if case == "one folder" else [run, out, *extra]
  status, errors = _refusal(argv, capsys)
  assert status == 2 and len(errors) == 1 and match in errors[0], errors
  assert _tree(tmp_path) == before  # nothing created, nothing left behind


def test_overwrite_is_atomic_and_a_failed_write_leaves_the_old_folder(gpt2_run, tmp_path, monkeypatch, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("old")

  def failing_writer(folder, *args, **kwargs):
    open(os.path.join(folder, "config.json"), "w").close()
    raise OSError("disk full")

  monkeypatch.setitem(core.WRITERS, "hf", failing_writer)
  status, errors = _refusal([gpt2_run, out, "overwrite=true"], capsys)
  assert status == 1 and "disk full" in errors[0]
  assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["old.txt"]
  monkeypatch.undo()
  assert cli.main([str(gpt2_run), str(out), "overwrite=true"]) == 0
  assert sorted(os.listdir(tmp_path)) == ["out"] and "old.txt" not in os.listdir(out)
  assert "model.safetensors" in os.listdir(out)


@pytest.mark.slow
@pytest.mark.assets
def test_real_smollm2_student_exports_with_equal_logits(tmp_path):
  """The default run's student (SmolLM2-135M-Instruct blocks 0, 3, …, 27) through a HF folder into transformers."""
  try:
    path = models.smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(f"SmolLM2 asset absent: {e}")
  from jaxlens.export.hf import write_hf
  student, _ = models.student_from_teacher(models.load_gguf(path), every=3)
  tokenizer = models.load_tokenizer(path)
  write_hf(str(tmp_path), student, tokenizer, template="chatml", dtype="float32")
  prompt = data.format_prompt({"instruction": "What is the capital of France?"}, "chatml")
  ids = np.array([tokenizer.encode(prompt)])
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
  # logits up to ~20 through 10 blocks: float32 summation order differs by up to ~1e-4 (rtol as the parity tests)
  np.testing.assert_allclose(_torch_logits(hf, ids), _logits(student, ids), atol=1e-4, rtol=1e-4)
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                 add_generation_prompt=True, tokenize=False)
  assert tok(chat)["input_ids"] == ids[0].tolist()
