"""The `leadattr` command: `run` the consumer, `send` lead events, `replay` dead letters,
`clear-offset-floor` before a deliberate replay of input."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from pathlib import Path

from consumer import logs
from consumer.avro.registry import RegistryRefused, RegistryUnavailable
from consumer.config import Config, SettingsError
from consumer.tools.send import PayloadError, parse_lines, send


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadattr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume leads.raw and publish attributed leads (SIGTERM stops cleanly)")
    sender = commands.add_parser("send", help="publish lead events given as JSON, as Avro keyed by cid")
    sender.add_argument("payload", nargs="?", help="one JSON event; omit to read one per line")
    sender.add_argument("--file", "-f", type=Path, help="file with one JSON event per line ('-' for stdin)")
    sender.add_argument("--topic", help="target topic (default: LEADS_INPUT_TOPIC)")
    replayer = commands.add_parser("replay", help="send dead-lettered records back to their source topic")
    replayer.add_argument("--reason", action="append", help="only this reason (repeatable); default: all")
    replayer.add_argument("--to", help="target topic (default: each record's sourceTopic)")
    replayer.add_argument("--limit", type=int, help="at most this many records")
    replayer.add_argument("--dry-run", action="store_true", help="count what would be replayed, send nothing")
    floor = commands.add_parser(
        "clear-offset-floor",
        help="forget the committed offsets this group's consumers keep in Redis, so that offsets reset "
        "to earlier positions are replayed instead of skipped (stop the consumers first)",
    )
    floor.add_argument("--dry-run", action="store_true", help="show the floor, change nothing")
    restorer = commands.add_parser(
        "restore-state",
        help="rebuild Redis's state from the state changelog after Redis lost state (the consumers may run)",
    )
    restorer.add_argument(
        "--from-redis",
        action="store_true",
        help="the other way, once, after an upgrade from a release without a changelog: write Redis's "
        "states to the changelog (stop the consumers first)",
    )
    tailer = commands.add_parser("tail", help="print a topic's committed records, decoded, as JSON lines")
    tailer.add_argument("topic", help="attributed, unlinked, dead-letter, input, or one of their topic names")
    tailer.add_argument("-n", type=int, default=10, help="the last N records (default 10)")
    tailer.add_argument("--from-beginning", action="store_true", help="every record the topic holds")
    tailer.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new records (Ctrl-C stops)"
    )
    tailer.add_argument("--cid", help="only this customer's records")
    inspector = commands.add_parser(
        "inspect", help="one customer's state as the service sees it (exit 1: none)"
    )
    inspector.add_argument("cid", help="the customerExternalId")
    inspector.add_argument(
        "--show-pii", action="store_true", help="show name, email, avatar, metadata unmasked"
    )
    forgetter = commands.add_parser(
        "forget",
        help="erase everything held for a customer (Redis, changelog) and publish an erasure record",
    )
    forgetter.add_argument("cid", help="the customerExternalId")
    forgetter.add_argument(
        "--request-id", help="your reference for the request, carried in the erasure record"
    )
    topics = commands.add_parser(
        "topics", help="create the service's topics, or check them against what it needs"
    )
    topics.add_argument("action", choices=["create", "check"])
    acls = commands.add_parser("acls", help="print the Kafka ACLs and the Redis ACL rule the service needs")
    acls.add_argument("--principal", default="User:leadattr", help="Kafka principal (default User:leadattr)")
    acls.add_argument("--redis-user", default="leadattr", help="Redis ACL user name (default leadattr)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = Config.load()
    except SettingsError as error:
        print(f"leadattr: {error}", file=sys.stderr)
        return 2
    logs.configure(config.settings.log_level)
    try:
        return _command(config, args)
    except (RegistryUnavailable, RegistryRefused) as error:
        # Nothing was consumed or sent yet: one line, no traceback, no credentials.
        print(f"leadattr: {error}", file=sys.stderr)
        return 3


def _unready(config: Config, args: argparse.Namespace) -> bool:
    """The dependencies a command other than `run` needs, checked once: True (and one line per
    failure on stderr) when one fails. `run` keeps checking (consumer/app.py)."""
    from consumer import preflight  # noqa: PLC0415
    from consumer.app import cluster_config  # noqa: PLC0415

    s = config.settings
    needs: dict[str, tuple[list[str] | None, bool, bool]] = {
        "send": ([args.topic or s.input_topic] if args.command == "send" else [], False, True),
        "replay": ([s.dead_letter_topic], False, False),
        "restore-state": ([s.changelog_topic], True, False),
        "clear-offset-floor": (None, True, False),
        "topics": ([], False, False),
        "tail": ([], False, True),
        "inspect": (None, True, False),
        "forget": ([s.changelog_topic, s.erasure_topic], True, True),
    }
    if args.command not in needs:
        return False
    topics, redis, registry = needs[args.command]
    problems = preflight.failures(config, cluster_config(config, "preflight"), topics, redis, registry)
    for line in problems:
        print(f"leadattr {args.command}: {line}", file=sys.stderr)
    return bool(problems)


def _command(config: Config, args: argparse.Namespace) -> int:
    if _unready(config, args):
        return 3
    if args.command == "run":
        from consumer.app import run  # noqa: PLC0415 - keeps `send` free of the consumer's wiring

        # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck consumer waits on.
        faulthandler.register(signal.SIGUSR1, all_threads=True)

        return run(config)
    if args.command == "inspect":
        from consumer.tools.inspect_customer import inspect  # noqa: PLC0415

        return inspect(config.settings, args.cid, args.show_pii)
    if args.command == "forget":
        from consumer.tools.forget import forget_command  # noqa: PLC0415

        return forget_command(config, args.cid, args.request_id)
    if args.command == "tail":
        from consumer.app import cluster_config  # noqa: PLC0415
        from consumer.tools.tail import resolve, tail  # noqa: PLC0415

        try:
            resolve(config.settings, args.topic)
        except ValueError as error:
            print(f"leadattr tail: {error}", file=sys.stderr)
            return 2
        try:
            return tail(
                config.settings,
                cluster_config(config, "tail"),
                args.topic,
                args.n,
                args.from_beginning,
                args.follow,
                args.cid,
            )
        except KeyboardInterrupt:
            return 0
    if args.command == "topics":
        from consumer.app import cluster_config  # noqa: PLC0415
        from consumer.tools import topics  # noqa: PLC0415

        base = cluster_config(config, "topics")
        return (
            topics.create(config.settings, base)
            if args.action == "create"
            else topics.check(config.settings, base)
        )
    if args.command == "acls":
        from consumer.tools.acls import print_acls  # noqa: PLC0415

        return print_acls(config.settings, args.principal, args.redis_user)
    if args.command == "restore-state":
        from consumer.tools.restore_state import restore_state  # noqa: PLC0415

        return restore_state(config, args.from_redis)
    if args.command == "replay":
        return _replay(config, args)
    if args.command == "clear-offset-floor":
        from consumer.tools.floor import clear_offset_floor  # noqa: PLC0415

        return clear_offset_floor(config, args.dry_run)
    return _send(config, args)


def _replay(config: Config, args: argparse.Namespace) -> int:
    from consumer.tools.replay import replay  # noqa: PLC0415

    summary = replay(config, set(args.reason or []), args.to, args.dry_run, args.limit)
    verb = "would replay" if args.dry_run else "replayed"
    counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary.selected.items())) or "nothing"
    left = (
        f"; left {summary.truncated} truncated ones (replay those from their source)"
        if summary.truncated
        else ""
    )
    print(f"scanned {summary.scanned} dead letters; {verb} {counts}{left}", file=sys.stderr)
    return 0


def _send(config: Config, args: argparse.Namespace) -> int:
    if args.payload is not None:
        lines = [args.payload]
    elif args.file is not None and str(args.file) != "-":
        lines = args.file.read_text().splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    try:
        records = [record for _, record in parse_lines(lines)]
    except PayloadError as error:
        print(f"leadattr send: refused, nothing sent: {error}", file=sys.stderr)
        return 2
    count = send(config, records, args.topic)
    logging.getLogger("leadattr.send").info("sent", extra=logs.fields(events=count))
    print(f"sent {count} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
