"""Benchmarks of redicache_async's hot paths, measured side by side with their baselines.

Run ``python -m benchmarks`` (``--smoke`` for a few-second run, as CI does).
"""
