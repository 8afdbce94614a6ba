"""Typed config: presets, overrides, --help, and the promised messages for bad configs."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import yaml
from train_fixtures import ROOT
from train_fixtures import tiny_config

from jaxlens.train import cli
from jaxlens.run import config as tconfig
from jaxlens.train import trainer
from jaxlens.train.objective import resolve_layer_pairs


def test_no_arguments_is_the_embedded_smollm2_default():
  cfg = tconfig.resolve([])
  assert cfg == tconfig.resolve(["smollm2"]) and cfg.preset == "smollm2"
  assert (cfg.teacher.source, cfg.student.source, cfg.student.blocks) == ("smollm2", "teacher_layers",
                                                                          (0, 3, 6, 9, 12, 15, 18, 21, 24, 29))
  assert (cfg.data.source, cfg.data.template, cfg.data.seq_len, cfg.data.split) == ("chatterbot", "chatml", 64,
                                                                                      "prompt")
  # A healthy DistillLens: 0.5 CE + 0.5 (AKL output + 1.0 × JSD(β = 0.5) on 5 normed lens pairs that follow the
  # student's construction).
  loss = cfg.loss
  assert (loss.alpha, loss.output_divergence, loss.head_rule, loss.lens_divergence, loss.lens_weight, loss.beta,
          loss.num_lens_pairs, loss.lens_norm, loss.layer_map) == (0.5, "adaptive_kl", "official", "jsd", 1.0, 0.5,
                                                                   5, True, "construction")
  assert resolve_layer_pairs(loss, 30, 10, cfg.student.blocks).teacher_layers == (4, 7, 13, 19, 22)
  # The dataclass defaults are DistillLens as released: RKL output + raw-lens JSD on 5 uniform pairs, no CE.
  raw = tconfig.TrainConfig().loss
  assert (raw.alpha, raw.output_divergence, raw.lens_norm, raw.layer_map) == (1.0, "reverse_kl", False, "uniform")
  assert resolve_layer_pairs(raw, 30, 10).teacher_layers == (5, 10, 15, 20, 25)


@pytest.mark.parametrize("preset, teacher, student", [
    ("gpt2-xl-base", (8, 16, 24, 32, 40), (2, 4, 6, 8, 10)),
    ("gpt2-xl-medium", (8, 16, 24, 32, 40), (4, 8, 12, 16, 20)),
    ("llama7b-tinyllama", (5, 10, 16, 21, 26), (4, 7, 11, 15, 18)),
])
def test_reference_recipes_carry_the_layer_lists(preset, teacher, student):
  with pytest.raises(tconfig.ConfigError, match="teacher.source=hf needs teacher.path"):
    tconfig.resolve([preset])
  cfg = tconfig.resolve([preset, "teacher.path=/t", "student.path=/s"])
  assert (cfg.loss.teacher_layers, cfg.loss.student_layers) == (teacher, student)
  assert (cfg.loss.alpha, cfg.loss.output_divergence, cfg.optim.schedule, cfg.optim.warmup_steps) == \
      (1.0, "reverse_kl", "cosine", 0)


@pytest.mark.parametrize("name, alpha, divergences", [
    ("sft", 0.0, None), ("fkl", 0.5, "forward_kl"), ("rkl", 0.5, "reverse_kl"),
    ("fkl-rkl", 0.5, "forward_kl+reverse_kl"), ("jsd", 0.5, "jsd"), ("akl", 0.5, "adaptive_kl"),
])
def test_baseline_presets_compose_with_a_model_preset(name, alpha, divergences):
  cfg = tconfig.resolve(["tiny", "steps=3", name])  # overrides win wherever they stand
  assert (cfg.preset, cfg.loss.alpha, cfg.loss.lens_weight, cfg.steps) == (f"tiny+{name}", alpha, 0.0, 3)
  if divergences:
    assert cfg.loss.output_divergence == divergences


def test_experiment_sweep_command_lines_resolve():
  """Every (scale, arm) command of experiments/sweep.py, and every method, is a valid train.py command line."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import sweep
  methods = yaml.safe_load(open(os.path.join(ROOT, "experiments", "methods.yaml")))
  for scale in os.listdir(os.path.join(ROOT, "experiments", "scales")):
    spec = sweep.load_scale(scale.removesuffix(".yaml"))
    sweep.validate(spec, methods, list(methods))


def test_overrides_types_and_round_trip():
  cfg = tconfig.resolve(["tiny", "steps=7", "loss.alpha=0.25", "loss.lens_norm=true", "optim.lr=3e-4",
                         "loss.teacher_layers=2,4", "loss.student_layers=[1,2]", "parallel.tensor=2"])
  assert (cfg.steps, cfg.loss.alpha, cfg.loss.lens_norm, cfg.optim.lr) == (7, 0.25, True, 3e-4)
  assert (cfg.loss.teacher_layers, cfg.loss.student_layers, cfg.parallel.tensor) == ((2, 4), (1, 2), 2)
  assert tconfig.from_dict(tconfig.to_dict(cfg)) == cfg


@pytest.mark.parametrize("argv, message", [
    (["tiny", "loss.alfa=0.5"], r"unknown config key 'loss.alfa'; did you mean 'loss.alpha'"),
    (["tiny", "nonsense=1"], r"unknown config key 'nonsense'; see python train.py --help"),
    (["tiny", "steps=ten"], r"steps: expected int, got 'ten'"),
    (["tiny", "steps=2.5"], r"steps: expected int, got '2.5'"),
    (["tiny", "loss.alpha=high"], r"loss.alpha: expected float, got 'high'"),
    (["tiny", "loss.lens_norm=maybe"], r"loss.lens_norm: expected true/false, got 'maybe'"),
    (["tiny", "loss.teacher_layers=2,x"], r"loss.teacher_layers: expected int, got 'x'"),
    (["tiny", "loss.output_divergence=kl"], r"loss.output_divergence: unknown divergence 'kl'; known: \["),
    (["tiny", "loss.output_divergence=forward_kl+kl"], r"unknown divergence 'kl'"),
    (["tiny", "loss.lens_divergence=mse"], r"loss.lens_divergence: unknown divergence 'mse'"),
    (["tiny", "loss.alpha=1.5"], r"loss.alpha must be in \[0, 1\], got 1.5"),
    (["tiny", "loss.teacher_layers=2,4", "loss.student_layers=1"], r"must have the same length"),
    (["tiny", "data.template=vicuna"], r"data.template='vicuna' is not one of \['alpaca', 'chatml'\]"),
    (["tiny", "optim.schedule=step"], r"optim.schedule='step' is not one of \['cosine', 'linear', 'constant'\]"),
    (["tiny", "batch_size=6", "grad_accum=4"], r"batch_size=6 must be a multiple of grad_accum=4"),
    (["tiny", "parallel.data=-1", "parallel.tensor=-1"], r"at most one of parallel.data/fsdp/tensor may be -1"),
    (["tiny", "teacher.source=teacher_layers"], r"teacher.source=teacher_layers is only valid for the student"),
    (["tiny", "teacher.source=run", "teacher.path=runs/x"], r"teacher.source=run is only valid for the student"),
    (["tiny", "student.source=run"], r"student.source=run needs student.path"),
    (["tiny", "student.blocks=3,1"], r"student.blocks must be increasing, unique and >= 0, got \[3, 1\]"),
    (["tiny", "loss.mix_weight=1.2"], r"loss.mix_weight must be in \[0, 1\], got 1.2"),
    (["tiny", "loss.layer_map=diagonal"], r"loss.layer_map='diagonal' is not one of \['uniform', 'construction'\]"),
    (["tiny", "data.split=random"], r"data.split='random' is not one of \['prompt', 'example'\]"),
    (["nope"], r"unknown preset 'nope'; known: \["),
    (["tiny", "steps"], r"unknown preset 'steps'; known: \["),
])
def test_bad_configs_fail_with_the_promised_message(argv, message):
  with pytest.raises(tconfig.ConfigError, match=message):
    tconfig.resolve(argv)


def test_construction_layer_map_needs_the_kept_blocks():
  cfg = tiny_config(loss__layer_map="construction", loss__num_lens_pairs=2)
  pairs = resolve_layer_pairs(cfg.loss, 6, 3, (0, 2, 4))
  assert (pairs.teacher_layers, pairs.student_layers) == ((1, 3), (1, 2))
  with pytest.raises(ValueError, match="layer_map=construction needs a student built from teacher blocks"):
    resolve_layer_pairs(cfg.loss, 6, 3)


def test_bad_layer_map_names_the_index_and_depth():
  cfg = tiny_config(loss__teacher_layers=(2, 9), loss__student_layers=(1, 2))
  with pytest.raises(ValueError, match=r"bad lens layer map .*teacher layer index 9 is outside \[0, 4\]"):
    resolve_layer_pairs(cfg.loss, 4, 2)


def test_mesh_that_does_not_match_the_devices_is_rejected(tmp_path):
  cfg = tiny_config(parallel__data=3, out_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"data×fsdp×tensor = 3×1×1 = 3 devices, but 8 are available"):
    trainer.train(cfg)
  cfg = tiny_config(parallel__data=8, batch_size=4, out_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"must be divisible by data × fsdp = 8 mesh shards"):
    trainer.train(cfg)


def test_help_lists_every_option_with_its_default(capsys):
  assert cli.main(["--help"]) == 0
  text = capsys.readouterr().out
  for key, (_, default, doc) in tconfig.flat_fields().items():
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    assert f"    {key}  (" in text and f"default {shown!r})" in text and doc, key
  for preset in tconfig.available_presets():
    assert preset in text
  assert len(tconfig.flat_fields()) > 60 and all(f.metadata.get("help") for f in dataclasses.fields(
      tconfig.LossConfig))


def test_cli_reports_config_errors_with_status_2(capsys):
  assert cli.main(["tiny", "loss.alpha=2"]) == 2
  assert capsys.readouterr().err.startswith("error: presets ['tiny'] + overrides: loss.alpha must be in [0, 1]")
  assert sys.argv  # the CLI never mutated argv


@dataclasses.dataclass(frozen=True)
class _Other:
  """Another CLI's config: the parser and --help work for any frozen config dataclass."""

  name: str = tconfig.opt("x", "a name")
  count: int = tconfig.opt(2, "how many")
  fast: bool = tconfig.opt(False, "go fast")

  def validate(self):
    if self.count < 1:
      raise tconfig.ConfigError(f"count must be >= 1, got {self.count}")
    return self


def test_the_parser_serves_any_config_dataclass():
  assert tconfig.build_config(_Other, {"count": "3", "fast": "yes"}) == _Other(count=3, fast=True)
  assert list(tconfig.flat_fields(_Other)) == ["name", "count", "fast"]
  with pytest.raises(tconfig.ConfigError, match=r"unknown config key 'cuont'; did you mean 'count'"):
    tconfig.build_config(_Other, {"cuont": "3"})
  with pytest.raises(tconfig.ConfigError, match=r"unknown config key 'zzz'; see python other.py --help"):
    tconfig.build_config(_Other, {"zzz": "3"}, command="python other.py")
  with pytest.raises(tconfig.ConfigError, match=r"^cli: count must be >= 1, got 0$"):
    tconfig.build_config(_Other, {"count": "0"}, where="cli")
  text = tconfig.help_text(_Other, "usage: python other.py [key=value ...]", top_group="other")
  assert text.startswith("usage: python other.py") and "  [other]\n    name  (str, default 'x')  a name" in text
  assert "    fast  (bool, default False)  go fast" in text and "presets" not in text


def test_a_stored_config_without_newer_keys_reads_as_the_run_was():
  stored = tconfig.to_dict(tconfig.resolve(["tiny"]))
  assert tconfig.from_stored(stored).data.split == "prompt"
  del stored["data"]["split"]  # written before data.split existed: those runs split by example
  assert tconfig.from_stored(stored).data.split == "example"
  with pytest.raises(tconfig.ConfigError, match=r"unknown config key 'loss.alfa'"):
    tconfig.from_stored({**stored, "loss": {**stored["loss"], "alfa": 1.0}})
