"""eval.py argument parsing and --help."""

import dataclasses

import pytest

from jaxlens.eval import cli


def test_parse_args_types_and_defaults():
  cfg = cli.parse_args(["students=a=runs/a,init=baseline", "greedy=true", "eval_batches=3", "mu=0.4", "seeds=1,2",
                        "head_rule=paper", "sample_temperature=0.7"])
  assert cfg.student_paths() == {"a": "runs/a", "init": "baseline"}
  assert cfg.greedy is True and cfg.eval_batches == 3 and cfg.mu == 0.4
  assert cfg.sampling_config().run_seeds() == (1,) and cfg.sampling_config().temperature == 0.7
  assert cfg.alignment_config().mu == 0.4 and cfg.alignment_config().head_rule == "paper"
  assert cli.parse_args(["students=a=x"]).sampling_config().seeds == (10, 20, 30, 40, 50)


@pytest.mark.parametrize("argv,match", [
    ([], "students: expected name=value"), (["students=a=x", "nope=1"], "unknown config key 'nope'"),
    (["students=a=x", "eval_batches=x"], "eval_batches: expected int"),
    (["students=a=x", "greedy=maybe"], "greedy: expected true/false"), (["students=a"], "name=value"),
    (["students=a=x,a=y"], "repeated name 'a'"), (["students=a=x", "batch_size=0"], "batch_size must be >= 1"),
    (["students=a=x", "seeds=1,x"], "seeds: expected comma-separated ints"),
    (["students=a=x", "head_rule=nope"], "head_rule"), (["students=a=x", "reference=b"], "not one of the students"), (["students=a=x", "top_p=0"], "top_p"), (["oops"], "key=value")])
def test_parse_args_errors(argv, match):
  with pytest.raises(ValueError, match=match):
    cli.parse_args(argv)


def test_main_reports_bad_arguments(capsys):
  assert cli.main(["students=a=x", "nope=1"]) == 2
  assert "error: unknown config key 'nope'" in capsys.readouterr().err


def test_help_lists_every_option_with_type_default_and_meaning(capsys):
  assert cli.main(["--help"]) == 0
  out = capsys.readouterr().out
  for f in dataclasses.fields(cli.EvalConfig):
    line = next(line for line in out.splitlines() if line.strip().startswith(f"{f.name}  ("))
    assert f"default {f.default!r}" in line and f.metadata["help"] in line


@pytest.mark.parametrize("argv,match", [
    (["students=a=x", "sed=1"], "did you mean 'seed' or 'seeds'"), (["students=a=hf:x"], "benchmark= sets only"),
    (["students=a=x", "benchmark=b=x.jsonl", "prompt_from=nope"], "prompt_from='nope'"),
    (["students=a=x", "template=vicuna"], "template='vicuna'"),
    (["students=teacher=x", "benchmark=b=x.jsonl"], "'teacher' names the runs' teacher")])
def test_unknown_keys_get_hints_and_bad_values_exit_2(argv, match, capsys):
  assert cli.main(argv) == 2
  errors = capsys.readouterr().err.strip().splitlines()
  assert len(errors) == 1 and errors[0].startswith("error:") and match in errors[0], errors
