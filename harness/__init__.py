"""Harness: experiment specs, planning, the artifact cache, the runner, executors, hardware
profiles and the ``slm`` CLI. Importing it imports no torch."""
