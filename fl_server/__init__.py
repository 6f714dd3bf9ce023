"""Server side of APFP-NAS: stage-1 pretraining, the Flower ServerApp and strategy, reports."""
