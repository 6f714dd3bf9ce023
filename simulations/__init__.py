"""Scenario files and the one-machine runner around Flower's simulation runtime.

``simulate("digits", run_dir=..., output_dir=...)`` runs stage 2 as a Flower
simulation (``flwr run`` against a private local SuperLink) and returns the path
of the report it wrote. Scenario files (TOML) live beside this module.
"""
