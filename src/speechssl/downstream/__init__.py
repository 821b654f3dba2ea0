"""Downstream tasks, probes and their training: the benchmark's side of the toolkit."""
