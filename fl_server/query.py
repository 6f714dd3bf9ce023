"""The query round: which nodes take part, on which device, with how much private data."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Collection

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from nas.errors import ApfpError, ReportError
from fl_server.messages import CONFIG, DataSpec, decode_query_reply

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientInfo:
    """A node as the query round described it."""

    node_id: int
    partition: int
    device: str
    num_train: int
    num_val: int
    num_test: int


def client_order(client: ClientInfo) -> tuple[int, int]:
    """Return the sort key that orders clients by partition, then node id."""
    return client.partition, client.node_id


def query_clients(grid: Grid, *, min_clients: int, data: DataSpec, resolution: int, devices: Collection[str],
                  timeout: float) -> dict[int, ClientInfo]:
    """Wait for ``min_clients`` nodes, then query each for its device, partition and split sizes.

    A node that fails the query, replies with a malformed record, or runs a profile not in
    ``devices`` is logged and left out. Raises :class:`ApfpError` when fewer than
    ``min_clients`` nodes connect within ``timeout`` seconds or remain usable.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < min_clients:
        if time.monotonic() > deadline:
            raise ApfpError(f"only {len(nodes)} of min-clients={min_clients} nodes connected within {timeout:g} s")
        time.sleep(1.0)
    content = {"data": data.to_json(), "resolution": resolution}
    messages = [Message(RecordDict({CONFIG: ConfigRecord(dict(content))}), dst_node_id=node,
                        message_type=MessageType.QUERY, group_id="query") for node in nodes]
    clients: dict[int, ClientInfo] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.error("node %d failed the query round: %s", node, reply.error.reason)
            continue
        try:
            info = decode_query_reply(reply.content)
        except ReportError as error:
            logger.error("node %d sent a malformed query reply: %s", node, error)
            continue
        if info["device"] not in devices:
            logger.error("node %d runs profile %r, which has no budgets or latency surrogate in this run "
                         "(known: %s); it is left out", node, info["device"], sorted(devices))
            continue
        clients[node] = ClientInfo(node, info["partition-id"], info["device"], info["num-train"],
                                   info["num-val"], info["num-test"])
    if len(clients) < min_clients:
        raise ApfpError(f"only {len(clients)} usable nodes replied to the query round; min-clients={min_clients}")
    logger.info("query round: %d clients on devices %s", len(clients), sorted({c.device for c in clients.values()}))
    return clients
