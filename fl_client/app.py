"""The Flower ``ClientApp`` of APFP-NAS.

Three handlers:

* ``query``: reply with this node's hardware profile name, partition id and private
  split sizes (the server sends this query once, before the first round).
* ``train``: for every candidate of the message, run
  :func:`fl_client.local_work.work_on_candidate` on the private train and validation
  splits; reply with metrics, plus the trained weights in the ``weights`` privacy mode
  (their update clipped to the message's ``clipping_norm`` when the server requests
  differential privacy). The run config may inject failures (:mod:`fl_client.faults`).
* ``evaluate``: the same work on the final recommendations, scored on the private
  test split, plus a membership-inference audit of each; never returns weights.

Private data, per-sample outputs and (in the default ``metrics`` mode) weights
never leave the node.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from nas.errors import ReportError
from fl_server.app import configure_logging
from fl_server.messages import (
    CONFIG,
    DataSpec,
    decode_instruction,
    encode_query_reply,
    encode_reply,
)
from fl_client.faults import FaultInjector, FaultSettings
from fl_client.local_work import Surrogates, work_on_candidate
from fl_server.dp import clip_update
from fl_client.node import data_spec_for_node, load_private_data, partition_of, resolve_profile

logger = logging.getLogger(__name__)

app = ClientApp()


def _prepare() -> None:
    configure_logging(logging.WARNING)
    # One training thread per client process keeps simulated clients from
    # oversubscribing the cores that latency measurements also need.
    torch.set_num_threads(1)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with the device profile name, the partition id and the private split sizes."""
    _prepare()
    config = msg.content[CONFIG]
    profile = resolve_profile(context.node_config, context.run_config)
    pid, count = partition_of(context.node_config)
    spec = data_spec_for_node(DataSpec.from_json(str(config["data"])), context.node_config)
    data = load_private_data(spec, int(config["resolution"]), pid, count)
    counts = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    return Message(encode_query_reply(profile.name, pid, counts), reply_to=msg)


def _work(msg: Message, context: Context, kind: str) -> Message:
    _prepare()
    instruction = decode_instruction(msg.content)
    if instruction.kind != kind:
        raise ReportError(f"a {kind} handler received a {instruction.kind!r} message")
    profile = resolve_profile(context.node_config, context.run_config)
    if profile.name != instruction.device:
        raise ReportError(
            f"the server addressed device {instruction.device!r}, but this node runs profile {profile.name!r}"
        )
    pid, count = partition_of(context.node_config)
    faults = FaultInjector(FaultSettings.from_run_config(context.run_config), instruction.round, pid,
                           context.node_id) if kind == "train" else None
    if faults is not None:
        faults.before_work()
    space = instruction.space
    data = load_private_data(data_spec_for_node(instruction.data, context.node_config), space.resolution, pid, count)
    surrogates = Surrogates(instruction.surrogates, space, profile.name)
    eval_split = data.val if kind == "train" else data.test
    reports, states = [], {}
    for index, candidate in enumerate(instruction.candidates):
        report, state = work_on_candidate(
            candidate, index=index, space=space, weights=instruction.weights.get(candidate.id), data=data,
            eval_split=eval_split, profile=profile, settings=instruction.settings, seed=instruction.seed,
            surrogates=surrogates, audit=kind == "evaluate",
        )
        reports.append(report)
        states[candidate.id] = state
        if faults is not None:
            faults.after_candidate()
    return_weights = kind == "train" and instruction.privacy == "weights"
    if return_weights and instruction.clipping_norm > 0:
        states, norm = clip_update(instruction.weights, states, instruction.clipping_norm)
        logger.info("weight update norm %.4g clipped to %.4g", norm, instruction.clipping_norm)
    content = encode_reply(kind, profile.name, reports, weights=states if return_weights else None)
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Fine-tune, evaluate (validation split) and time every candidate of the message."""
    return _work(msg, context, "train")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Fine-tune, evaluate (test split) and time every final recommendation of the message."""
    return _work(msg, context, "evaluate")
