"""Training: typed config, the distillation objective, the jitted step, checkpoints, logs and the loop."""

from jaxlens.run.config import ConfigError
from jaxlens.run.config import TrainConfig
from jaxlens.run.config import resolve
from jaxlens.train.objective import Objective
from jaxlens.train.objective import resolve_layer_pairs
from jaxlens.train.optimizer import learning_rate_schedule
from jaxlens.train.optimizer import make_optimizer
from jaxlens.train.step import make_eval_sums
from jaxlens.train.step import make_train_step
from jaxlens.train.trainer import RunResult
from jaxlens.train.trainer import train

__all__ = [
    "ConfigError",
    "Objective",
    "RunResult",
    "TrainConfig",
    "learning_rate_schedule",
    "make_eval_sums",
    "make_optimizer",
    "make_train_step",
    "resolve",
    "resolve_layer_pairs",
    "train",
]
