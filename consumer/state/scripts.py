"""The Redis scripts (consumer/state/lua/) and how they are sent: apply.lua's EVALSHA packed in one
pass and sent on a connection of its own, optionally with the replication barrier (WAIT) behind it,
and its reply turned into what the store's callers expect."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

from consumer.state.store import Fenced, ReplicasBehind, StateLost


def _applied(reply: list[int]) -> list[bool]:
    return [r == 1 for r in reply]


def script_text(name: str) -> str:
    return resources.files("consumer.state").joinpath("lua", name).read_text()


class Script:
    """EVALSHA with a reload when Redis has forgotten the script (after a restart).

    The command is packed in one pass (consumer/state/command.py, compiled) and sent on a pooled
    connection directly: a batch's write carries ~10 arguments per customer, and both redis-py's
    packing (a Python generator over them) and hiredis's generic one cost more than the rest of
    the write (docs/performance.md). No client-side retry either: the run loop decides what a
    failed write means (the journal makes a repeated batch publish the same)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._r = client
        self._text = script_text(name)
        self._sha = ""

    def __call__(self, command: Callable[[str], bytes], barrier: tuple[int, int] | None = None) -> Any:
        return self.send(command, barrier)()

    def send(
        self, command: Callable[[str], bytes], barrier: tuple[int, int] | None = None
    ) -> Callable[[], Any]:
        """The EVALSHA ``command`` packs for the script's sha, sent on a connection of its own;
        the returned call reads the reply (once). Redis runs commands of one connection in order,
        and the caller reads this reply before sending anything that depends on it, so nothing
        reads what this script has not written. ``barrier`` (replicas, timeout ms): a WAIT right
        behind it, on the same connection, so that it covers this write; fewer replicas than asked
        raise ReplicasBehind."""
        if not self._sha:
            self._sha = str(self._r.script_load(self._text))
        packed = [command(self._sha)]
        if barrier is not None:
            packed.append(
                b"*3\r\n$4\r\nWAIT\r\n$%d\r\n%d\r\n$%d\r\n%d\r\n" % (*_bulk(barrier[0]), *_bulk(barrier[1]))
            )
        pool = self._r.connection_pool
        connection: Any = pool.get_connection()  # redis-py leaves Connection untyped
        try:
            connection.send_packed_command(packed)
        except BaseException:
            connection.disconnect()  # a half-sent command must not precede the next one
            pool.release(connection)
            raise

        def reply() -> Any:
            try:
                try:
                    result: Any = connection.read_response()
                except ResponseError as error:  # the WAIT's reply still follows: read it too
                    result = error
                acked = connection.read_response() if barrier is not None else 0
            except BaseException:
                connection.disconnect()  # its reply may still be on the way: never reuse it
                raise
            finally:
                pool.release(connection)
            if isinstance(result, NoScriptError):
                # Nothing ran: EVALSHA failed before executing, so sending it again is safe.
                self._sha = ""
                return self(command, barrier)
            if isinstance(result, ResponseError):
                raise result
            if barrier is not None and int(acked) < barrier[0]:
                raise ReplicasBehind(
                    f"{acked} of {barrier[0]} replicas acknowledged the write within {barrier[1]} ms"
                )
            return result

        return reply


def _bulk(number: int) -> tuple[int, int]:
    """(length of the decimal text, the number): one RESP bulk string's header and body."""
    return len(str(number)), number


def applied_or_refused(reply: Callable[[], Any]) -> list[bool]:
    """apply.lua's reply: applied per customer, or the refusal of a guard as its own exception."""
    try:
        return _applied(reply())
    except ResponseError as error:
        text = str(error)
        if text.startswith("STATE_LOST"):
            raise StateLost(text.removeprefix("STATE_LOST ")) from None
        if text.startswith("FENCED"):
            raise Fenced(
                f"the partition {text.removeprefix('FENCED ')} was assigned to another instance"
            ) from None
        raise
