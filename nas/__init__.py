"""The NAS core of APFP-NAS: search space, elastic supernet, training, export, data, search.

Nothing in this package imports Flower, so the supernet, the datasets and the search
strategies work on their own. Start with :mod:`nas.space` (``SearchSpace``,
``Architecture``), :mod:`nas.supernet` (``ElasticSupernet``), :mod:`nas.train` and
:mod:`nas.finetune`, :mod:`nas.evaluate`, :mod:`nas.export` (ONNX), :mod:`nas.data`
(datasets and partitioning) and :mod:`nas.search` (strategies, Pareto tools).
"""
