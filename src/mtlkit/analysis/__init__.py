"""Judging multi-task runs: single-task baselines and verdicts, diagnostics during training, plots and reports."""
