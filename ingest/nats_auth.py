"""The cluster mode's device identity on NATS (docs/cluster.md, "Device identity"): the logins
and rights of config/broker.py (the ones Mosquitto's password and ACL files carry) as a NATS
`authorization` block, which every server of the cluster includes. NATS lets MQTT clients log
in as its users and checks a publish against the user's permissions on the subject it stores,
that is after the partition mapping (ingest/nats.py): a device's own topics are allowed in
their partitioned form, `$CW.{prefix}.{partition}.{site}.{device}.*`, which names the one
partition of its site, and the rest of its `#` (other level counts, dead letters) unmapped.

A publish outside them is acknowledged to the device (PUBACK) and dropped by the server, which
logs a "Publish Violation"; nothing is stored. The workers' user may use the JetStream API and
acknowledge, and receive on its inboxes; a device or gateway may receive nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from config.broker import Identity
from ingest.nats import PARTITIONED, partition

# What a worker's connection needs: JetStream API requests (consumers, fetches, stream info),
# acknowledgements, and the answers on its inboxes.
WORKER_PUBLISH = ("$JS.API.>", "$JS.ACK.>")
WORKER_SUBSCRIBE = ("_INBOX.>",)


def publish_subjects(topic_filter: str, partitions: int) -> list[str]:
    """The NATS subjects, as stored after the mapping, of an MQTT publish filter of a device or
    gateway: `{prefix}/{site}/{device}/#` or a topic `{prefix}/{site}/{device}/{kind}`. Raises
    ValueError for another shape (a wildcard site would span partitions)."""
    levels = topic_filter.split("/")
    if levels[-1] == "#" and len(levels) == 4 and "+" not in levels:
        prefix, site, device, _ = levels
        return [
            f"{prefix}.{site}.{device}",
            f"{PARTITIONED}.{prefix}.{partition(partitions, site)}.{site}.{device}.*",
            f"{prefix}.{site}.{device}.*.>",
        ]
    if len(levels) == 4 and not {"+", "#"} & set(levels):
        prefix, site, device, kind = levels
        return [f"{PARTITIONED}.{prefix}.{partition(partitions, site)}.{site}.{device}.{kind}"]
    raise ValueError(f"no NATS permission for the MQTT filter {topic_filter!r}")


def nats_authorization(
    identities: Sequence[Identity], passwords: Mapping[str, str], partitions: int
) -> str:
    """The `authorization { users: [...] }` block of every NATS server: the service's login is
    the workers' user, each device and gateway a user allowed its own subjects only."""
    lines = [
        "# Written by `clausewatch broker files` from the site model; regenerate, do not edit.",
        f"# For {partitions} partitions (CLAUSEWATCH_CLUSTER_PARTITIONS): a device's subjects name",
        "# its site's partition. Include it in every NATS server's configuration.",
        "authorization {",
        "  users: [",
    ]
    for identity in identities:
        if identity.kind == "service":
            publish, subscribe = list(WORKER_PUBLISH), {"allow": list(WORKER_SUBSCRIBE)}
            connection = "STANDARD"  # the nodes' NATS connections
        else:
            publish = [s for f in identity.publish for s in publish_subjects(f, partitions)]
            subscribe = {"deny": [">"]}
            connection = "MQTT"  # a device's login opens no NATS connection
        user = {
            "user": identity.username,
            "password": passwords[identity.username],
            "allowed_connection_types": [connection],
            "permissions": {"publish": {"allow": publish}, "subscribe": subscribe},
        }
        # JSON is NATS configuration syntax; the strings are quoted, so `$CW` is no variable.
        lines.append(f"    {json.dumps(user, ensure_ascii=False)}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
