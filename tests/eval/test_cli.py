"""eval.py argument parsing."""

import pytest

from jaxlens.eval import cli


def test_parse_args_types_and_defaults():
  cfg = cli.parse_args(["students=a=runs/a,init=baseline", "greedy=true", "eval_batches=3", "mu=0.4",
                        "seeds=1,2"])
  assert cli.parse_pairs(cfg.students, "students") == {"a": "runs/a", "init": "baseline"}
  assert cfg.greedy is True and cfg.eval_batches == 3 and cfg.mu == 0.4
  assert cfg.sampling_config().run_seeds() == (1,)
  assert cfg.alignment_config().mu == 0.4
  assert cli.parse_args([]).sampling_config().seeds == (10, 20, 30, 40, 50)


@pytest.mark.parametrize("argv,match", [
    (["nope=1"], "unknown key 'nope'"), (["eval_batches=x"], "eval_batches: expected int"),
    (["greedy=maybe"], "greedy: expected true/false"), (["students=a"], "name=value"),
    (["students=a=x,a=y"], "repeated name 'a'"), (["batch_size=0"], "batch_size must be >= 1"), (["oops"], "key=value")])
def test_parse_args_errors(argv, match):
  with pytest.raises(ValueError, match=match):
    cli.parse_args(argv)
