"""The APFP-NAS Flower ClientApp: local fine-tuning, evaluation and latency measurement.

A client learns its hardware profile and its private data from its node config
(deployment) or from the run config keyed by partition id (simulation), works on
the candidates the server sends and replies with metrics only (plus trained
weights in the ``weights`` privacy mode). See :mod:`fl_client.app`.
"""
