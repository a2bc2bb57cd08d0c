"""Reliable robustness evaluation: ensemble worst case, eps sweeps, minimal-norm statistics and
sanity checks against gradient masking."""

from advlab.evaluation.evaluate import EOT, collect_data, evaluate
from advlab.evaluation.presets import PRESETS, AttackStep, resolve_ensemble, resolve_steps
from advlab.evaluation.result import EvaluationResult, fingerprint_data, fingerprint_model
from advlab.evaluation.resume import CheckpointExists, CheckpointMismatch
from advlab.evaluation.sanity import FLAGS, Flag

__all__ = ["EOT", "FLAGS", "PRESETS", "AttackStep", "CheckpointExists", "CheckpointMismatch",
           "EvaluationResult", "Flag", "collect_data",
           "evaluate", "fingerprint_data", "fingerprint_model",
           "resolve_ensemble", "resolve_steps"]
