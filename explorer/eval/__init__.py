"""Evaluation harness: lmms-eval-style tasks, resumable sharded sweeps, the paper's tables and plots."""
