"""The names of the keys the service keeps in Redis, and of the fields and members inside them.

The wake index and the counters are global keys, so this needs a single Redis (or a primary with
replicas), not a Redis Cluster. Keys:

  <prefix>:s:{cid}                customer state (consumer/state/codec.py), no TTL: the expiry
                                  sweeper deletes it once nothing is left in it
  <prefix>:j:<topic>:<partition>  journal of one input partition: one field per batch write,
                                  "<last offset>:<token>" -> the framed decisions of its records
  <prefix>:wake                   zset of the seconds that have a wake list (member = score = second)
  <prefix>:wake:<second>          a header "<list id>:<entries removed>", then the cids whose state
                                  falls due in that second (the wake index: CustomerState.wake_ms),
                                  for the expiry sweeper
  <prefix>:pending / <prefix>:held   counters behind the leads_pending gauges
  <prefix>:committed:<group>      zset "<topic>:<partition>@<topic id>" -> the group's committed
                                  offset, as last confirmed to this service: the committed-offset floor
  <prefix>:q:{cid}                states of the customer that could not be read, moved aside for an
                                  operator (consumer/processing/quarantine.py): a hash, one field per
                                  distinct blob (the first 16 hex digits of its SHA-256) -> the blob
  <prefix>:erasures               how many erasures `leadattr forget` carried out (a counter)
  <prefix>:deadlines              the index of releases before 0.2.0 (zset "<due ms>:<cid>"): still
                                  swept until empty, never written

The wake index is one list entry (the bare cid, ~30 bytes) per customer instead of a sorted-set
member per item (~145 bytes), and states have no TTL (a TTL costs ~43 bytes a key): together with
the binary state encoding that is what keeps a pending lead under 400 bytes of Redis memory
(docs/performance.md). An entry is appended whenever a write moves a state's wake time and is
never removed then: an entry that no longer matches its state is dropped by the sweeper when its
second comes (consumer/processing/sweeper.py). Entries are removed only from the head of a list
and by position (each list starts with a header counting the entries removed since it was created: wake_ack.lua), so
no sweeper removes an entry it did not read, whatever other sweepers and writers did meanwhile.
"""

from __future__ import annotations

from consumer.state.customer import PartitionKey


def wake_second(wake_ms: int) -> int:
    """The wake list a wake time goes to (<prefix>:wake:<second>)."""
    return wake_ms // 1000


def state_key(prefix: str, cid: str) -> str:
    """<prefix>:s:{cid}: the braces make the cid the key's hash tag."""
    return f"{prefix}:s:{{{cid}}}"


def quarantine_key(prefix: str, cid: str) -> str:
    return f"{prefix}:q:{{{cid}}}"


def erasures_key(prefix: str) -> str:
    return f"{prefix}:erasures"


def legacy_member_cid(member: str) -> str:
    return member.split(":", 1)[1]


def journal_field(last_offset: int, token: str) -> str:
    """A journal field names the last input offset it may hold, so a reader that starts past it
    knows the field was committed and may go, without decoding it."""
    return f"{last_offset}:{token}"


def field_last_offset(name: str) -> int:
    return int(name.split(":", 1)[0])


def floor_member(partition: PartitionKey, topic_id: str = "") -> str:
    """ "<topic>:<partition>@<topic id>": the id (Kafka's, new for a topic deleted and created
    again, whose offsets start over) keeps an old topic's floor from applying to the new one."""
    return f"{partition[0]}:{partition[1]}@{topic_id}"
