"""Runs: one engine for every method (:mod:`saa.run.engine`) and the benchmark runner that
evaluates a whole dataset (:mod:`saa.run.runner`)."""
from .engine import CategoryRun, distributed_context, reference_ids, run_category
from .runner import CategoryResult, evaluate_category, evaluate_run, make_method

__all__ = ["CategoryRun", "run_category", "distributed_context", "reference_ids", "CategoryResult",
           "evaluate_category", "evaluate_run", "make_method"]
