#!/usr/bin/env python3
"""Is a Kafka broker serving on HOST:PORT?  Standard library only.

Used by services.sh to decide that Kafka is "up". A bare TCP connect is not
enough: the broker binds its port well before it has caught up with the KRaft
metadata log and registered itself, and clients connecting in that window get
errors. So we send a real Metadata request (v4, no topics) and require the
answer to list at least one broker.

Metadata v4 is used because Kafka 4.0 removed v0-v3 (KIP-896) and v4..v8 are
still non-"flexible", which keeps the encoding trivial.

Usage: kafka_probe.py PORT [HOST]
Exit codes:
  0  a Kafka broker answered and lists >= 1 broker (prints "cluster_id broker_count")
  1  nothing is listening (connection refused / timed out)
  2  something listens but did not answer like a ready Kafka broker
"""

import socket
import struct
import sys

API_METADATA = 3
API_VERSION = 4
CORRELATION_ID = 0x4C454144  # arbitrary


def _request() -> bytes:
    client_id = b"services.sh-probe"
    header = struct.pack(">hhih", API_METADATA, API_VERSION, CORRELATION_ID, len(client_id)) + client_id
    # topics: empty array (not null: null would mean "all topics");
    # allow_auto_topic_creation: false
    body = struct.pack(">ib", 0, 0)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def probe(host: str, port: int, timeout: float = 3.0) -> int:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return 1
    try:
        with sock:
            sock.settimeout(timeout)
            sock.sendall(_request())
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if size < 16 or size > 10_000_000:
                return 2
            data = _recv_exact(sock, size)
    except (OSError, ConnectionError, struct.error):
        return 2
    try:
        off = 0
        (corr,) = struct.unpack_from(">i", data, off)
        off += 4
        if corr != CORRELATION_ID:
            return 2
        off += 4  # throttle_time_ms
        (n_brokers,) = struct.unpack_from(">i", data, off)
        off += 4
        for _ in range(max(n_brokers, 0)):
            off += 4  # node_id
            (hlen,) = struct.unpack_from(">h", data, off)
            off += 2 + max(hlen, 0)
            off += 4  # port
            (rlen,) = struct.unpack_from(">h", data, off)
            off += 2 + max(rlen, 0)
        (clen,) = struct.unpack_from(">h", data, off)
        off += 2
        cluster_id = data[off : off + clen].decode() if clen >= 0 else "-"
    except (struct.error, UnicodeDecodeError):
        return 2
    if n_brokers < 1:
        return 2
    print(f"{cluster_id} {n_brokers}")
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    return probe(host, port)


if __name__ == "__main__":
    sys.exit(main())
