#!/usr/bin/env python3
"""Is a Kafka broker serving on HOST:PORT?  Standard library only.

Used by services.sh to decide that Kafka is "up". A bare TCP connect is not
enough: the broker binds its port well before it has caught up with the KRaft
metadata log and registered itself, and clients connecting in that window get
errors. So we send a real Metadata request (v4, no topics) and require the
answer to list at least one broker (or, with --expect-brokers, all the given
node ids: a cluster is ready once every node is registered and unfenced).

--coordinators also asks for a group and a transaction coordinator
(FindCoordinator v1). The first such request creates __consumer_offsets and
__transaction_state; once both answer, a consumer group and a transactional
producer work at once instead of retrying while the internal topics appear.

--cafile/--user/--password-file: the port is a SASL_SSL listener. The probe
verifies the server certificate against the CA, authenticates with
SCRAM-SHA-512 (SaslHandshake v1 + SaslAuthenticate v1), then probes as above.

Metadata v4, FindCoordinator v1 and the SASL v1 requests are used because
Kafka 4.0 removed the older versions (KIP-896) and these are still
non-"flexible", which keeps the encoding trivial.

Usage: kafka_probe.py PORT [HOST] [--expect-brokers 1,2,3] [--coordinators]
                      [--cafile CA.pem --user NAME --password-file FILE]
Exit codes:
  0  a Kafka broker answered and is ready (prints "cluster_id broker_count node_ids")
  1  nothing is listening (connection refused / timed out)
  2  something listens but did not answer like a ready Kafka broker
  3  the TLS handshake or the SASL authentication was refused
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import sys

API_METADATA = 3
API_FIND_COORDINATOR = 10
API_SASL_HANDSHAKE = 17
API_SASL_AUTHENTICATE = 36
CLIENT_ID = b"services.sh-probe"
COORDINATOR_KEY = "services.sh-probe"
MECHANISM = "SCRAM-SHA-512"


class NotReady(Exception):
    """The broker answered, but not (yet) like a ready one."""


class Refused(Exception):
    """TLS or SASL said no: retrying will not help."""


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0x4C454144  # arbitrary

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, len(CLIENT_ID)) + CLIENT_ID
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", self._recv_exact(4))
        if size < 4 or size > 10_000_000:
            raise NotReady(f"response size {size}")
        data = self._recv_exact(size)
        (corr,) = struct.unpack_from(">i", data, 0)
        if corr != self.correlation:
            raise NotReady("correlation id mismatch")
        return data[4:]

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _read_string(data: bytes, off: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, off)
    off += 2
    if length < 0:
        return None, off
    return data[off : off + length].decode(), off + length


def metadata(conn: Connection) -> tuple[str, list[int]]:
    # topics: empty array (not null: null would mean "all topics");
    # allow_auto_topic_creation: false
    data = conn.request(API_METADATA, 4, struct.pack(">ib", 0, 0))
    off = 4  # throttle_time_ms
    (n_brokers,) = struct.unpack_from(">i", data, off)
    off += 4
    ids = []
    for _ in range(max(n_brokers, 0)):
        (node_id,) = struct.unpack_from(">i", data, off)
        ids.append(node_id)
        _, off = _read_string(data, off + 4)  # host
        off += 4  # port
        _, off = _read_string(data, off)  # rack
    cluster_id, _ = _read_string(data, off)
    return cluster_id or "-", ids


def find_coordinator(conn: Connection, key_type: int) -> None:
    data = conn.request(API_FIND_COORDINATOR, 1, _string(COORDINATOR_KEY) + struct.pack(">b", key_type))
    (error,) = struct.unpack_from(">h", data, 4)  # after throttle_time_ms
    if error != 0:
        raise NotReady(f"FindCoordinator(key_type={key_type}) error {error}")


def sasl_scram(conn: Connection, user: str, password: str) -> None:
    data = conn.request(API_SASL_HANDSHAKE, 1, _string(MECHANISM))
    (error,) = struct.unpack_from(">h", data, 0)
    if error != 0:
        raise Refused(f"SaslHandshake {MECHANISM}: error {error}")

    def authenticate(message: bytes) -> bytes:
        reply = conn.request(API_SASL_AUTHENTICATE, 1, struct.pack(">i", len(message)) + message)
        (code,) = struct.unpack_from(">h", reply, 0)
        text, off = _read_string(reply, 2)
        if code != 0:
            raise Refused(f"SaslAuthenticate: error {code} {text or ''}".strip())
        (length,) = struct.unpack_from(">i", reply, off)
        return reply[off + 4 : off + 4 + max(length, 0)]

    # RFC 5802 (SCRAM) with SHA-512, as Kafka's ScramSaslServer expects it.
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    server_first = authenticate(f"n,,{first_bare}".encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    if not fields.get("r", "").startswith(nonce):
        raise Refused("SCRAM: server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha512).digest()
    stored_key = hashlib.sha512(client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha512).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = authenticate(f"{final_bare},p={proof}".encode()).decode()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha512).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha512).digest()).decode()
    if server_final != f"v={expected}":
        raise Refused("SCRAM: the server's signature does not verify")


def probe(args: argparse.Namespace, timeout: float = 3.0) -> int:
    try:
        sock = socket.create_connection((args.host, args.port), timeout=timeout)
    except OSError:
        return 1
    try:
        with sock:
            sock.settimeout(timeout)
            if args.cafile:
                context = ssl.create_default_context(cafile=args.cafile)
                try:
                    sock = context.wrap_socket(sock, server_hostname=args.host)
                except ssl.SSLCertVerificationError as error:
                    raise Refused(f"TLS: {error}") from error
            conn = Connection(sock)
            if args.user:
                with open(args.password_file, encoding="utf-8") as handle:
                    sasl_scram(conn, args.user, handle.read().strip())
            cluster_id, ids = metadata(conn)
            if not ids:
                raise NotReady("no broker registered")
            missing = sorted(set(args.expect_brokers) - set(ids))
            if missing:
                raise NotReady(f"brokers {missing} not registered")
            if args.coordinators:
                find_coordinator(conn, 0)  # group
                find_coordinator(conn, 1)  # transaction
    except Refused as error:
        print(error, file=sys.stderr)
        return 3
    except NotReady as error:
        print(error, file=sys.stderr)
        return 2
    except (OSError, ConnectionError, struct.error, UnicodeDecodeError, ValueError, KeyError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(f"{cluster_id} {len(ids)} {','.join(map(str, sorted(ids)))}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument(
        "--expect-brokers",
        type=lambda text: [int(i) for i in text.split(",") if i],
        default=[],
        help="node ids that must all be registered",
    )
    parser.add_argument("--coordinators", action="store_true", help="also require group and txn coordinators")
    parser.add_argument("--cafile", help="TLS: verify the broker against this CA (PEM)")
    parser.add_argument("--user", help="SASL SCRAM-SHA-512 user")
    parser.add_argument("--password-file", help="file holding the SASL user's password")
    args = parser.parse_args()
    if args.user and not (args.cafile and args.password_file):
        parser.error("--user needs --cafile and --password-file")
    return probe(args)


if __name__ == "__main__":
    sys.exit(main())
