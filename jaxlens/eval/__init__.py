"""Evaluation of distilled students: teacher-forced alignment per lens layer, generation metrics, reports."""

from jaxlens.eval.alignment import AlignmentAccumulator
from jaxlens.eval.alignment import AlignmentConfig
from jaxlens.eval.alignment import MetricSummary
from jaxlens.eval.alignment import accumulate_logits
from jaxlens.eval.alignment import ece_from_bins
from jaxlens.eval.alignment import head_mask
from jaxlens.eval.alignment import token_metrics
from jaxlens.eval.generation import SamplingConfig
from jaxlens.eval.generation import rouge_l
from jaxlens.eval.generation import sbert_similarity
from jaxlens.eval.generation import score_runs
from jaxlens.eval.report import markdown
from jaxlens.eval.teacher_forced import evaluate_alignment
from jaxlens.eval.report import write_report

__all__ = [
    "AlignmentAccumulator",
    "AlignmentConfig",
    "MetricSummary",
    "SamplingConfig",
    "accumulate_logits",
    "ece_from_bins",
    "evaluate_alignment",
    "head_mask",
    "markdown",
    "rouge_l",
    "sbert_similarity",
    "score_runs",
    "token_metrics",
    "write_report",
]
