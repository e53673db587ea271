"""`assessment-refresh`: the one command line of the service."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from shared.kafka_properties import ConfigurationError
from shared.log_setup import setup_logging
from shared.settings import Settings


def _settings(**flags: object) -> Settings:
    """The environment's settings; a command-line flag given wins over its variable."""
    return Settings.from_env(**{name: value for name, value in flags.items() if value is not None})


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from producer_api.app import create_app

    settings = _settings(api_host=args.host, api_port=args.port)
    # log_config=None: uvicorn's lines go through our handler (JSON or text).
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port,
        log_level=settings.log_level.lower(), log_config=None,
    )
    return 0


def cmd_consumer(args: argparse.Namespace) -> int:
    from consumer.main import run_consumer

    run_consumer(_settings(consumer_metrics_host=args.metrics_host, consumer_metrics_port=args.metrics_port))
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from shared.db import make_engine, migrate

    migrate(make_engine(_settings().database_url))
    print("schema is up to date")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from assessment_refresh.loader import LoadError, load_world, read_world
    from shared.db import make_engine

    try:
        world = read_world(Path(args.file))
        total = len(world.questions) + len(world.assessments)
        with tqdm(total=total, unit="rec", desc=f"loading {args.file}", disable=args.quiet or not total) as bar:
            summary = load_world(make_engine(_settings().database_url), world, args.file, bar.update)
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("nothing was imported", file=sys.stderr)
        return 2
    print(
        f"loaded {args.file}: {summary.companies} companies, {summary.api_keys} API keys, "
        f"{summary.questions_changed} questions added or changed, "
        f"{summary.assessments_created} assessments created, {summary.assessments_kept} kept as they were"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from shared.apikeys import add_key, generate_key, revoke_key
    from shared.db import make_engine

    engine = make_engine(_settings().database_url)
    with engine.begin() as conn:
        if args.keys_command == "create":
            key = generate_key()
            add_key(conn, args.company, key)
            print(key)
            print("store this key now: only its hash is kept", file=sys.stderr)
            return 0
        if revoke_key(conn, args.key):
            print("revoked")
            return 0
    print("error: no such active key", file=sys.stderr)
    return 1


def _timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _partition_offset(value: str) -> tuple[int, int]:
    partition, sep, offset = value.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET, got {value!r}")
    return int(partition), int(offset)


def cmd_replay(args: argparse.Namespace) -> int:
    from consumer.replay import StartPoint, run_replay
    from shared.db import make_engine

    settings = _settings()
    if args.from_offset:
        start = StartPoint(partition=args.from_offset[0], offset=args.from_offset[1])
    elif args.from_time:
        start = StartPoint(since=args.from_time)
    else:
        start = StartPoint(beginning=True)
    summary = run_replay(
        settings, make_engine(settings.database_url), args.topic, start,
        until=args.to_time, group_id=args.group, dry_run=args.dry_run, quiet=args.quiet,
    )
    return 1 if summary.dead_lettered else 0


def cmd_publish(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from assessment_refresh.publish import publish_event, question_deleted

    settings = _settings()
    event = question_deleted(args.qid)
    try:
        partition, offset = publish_event(settings, event)
    except KafkaException as exc:
        print(f"error: {settings.question_events_topic} did not take the event: {exc.args[0].str()}", file=sys.stderr)
        return 1
    print(f"published question.deleted {args.qid} (event_id {event.event_id}) to "
          f"{settings.question_events_topic} [{partition}] @{offset}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from assessment_refresh.dev import run_dev

    try:
        return run_dev(Path(args.data_dir), api_port=args.port, kafka_port=args.kafka_port, broker=args.broker)
    except KeyboardInterrupt:  # during start-up: run_dev stopped what had started
        return 130


def cmd_acls(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from assessment_refresh.acls import Principals, apply, bindings, describe

    settings = _settings()
    wanted = bindings(settings, Principals(args.api_principal, args.consumer_principal, args.bank_principal),
                      create_topics=not args.no_create_topics)
    for binding in wanted:
        print(describe(binding))
    if args.dry_run:
        return 0
    try:
        apply(settings, wanted)
    except KafkaException as exc:
        # The code (CLUSTER_AUTHORIZATION_FAILED: this principal may not alter ACLs) says more than Kafka's text.
        print(f"error: the broker refused the ACLs: {exc.args[0].name()}: {exc.args[0].str()}", file=sys.stderr)
        return 1
    print(f"{len(wanted)} ACL bindings in place on {settings.kafka_bootstrap_servers}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assessment-refresh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # No --workers: run more API processes instead (each has its own reply
    # reader, as replicas behind a load balancer do), so each can be stopped,
    # health-checked and scaled on its own.
    api = sub.add_parser("api", help="serve the REST API (uvicorn)")
    api.add_argument("--host", help="interface to listen on (env API_HOST, default 127.0.0.1)")
    api.add_argument("--port", type=int, help="port to listen on (env API_PORT, default 8000)")
    api.set_defaults(func=cmd_api)
    consumer = sub.add_parser("consumer", help="run one consumer-group member")
    consumer.add_argument("--metrics-host", help="interface of /metrics, /healthz, /readyz (env CONSUMER_METRICS_HOST)")
    consumer.add_argument("--metrics-port", type=int,
                          help="port of /metrics, /healthz, /readyz; 0: none (env CONSUMER_METRICS_PORT, default 9400)")
    consumer.set_defaults(func=cmd_consumer)
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(func=cmd_migrate)
    load = sub.add_parser("load", help="import companies, API keys, questions and assessments from JSON")
    load.add_argument("file")
    load.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    load.set_defaults(func=cmd_load)
    keys = sub.add_parser("keys", help="create or revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a company and print it once")
    create.add_argument("--company", type=int, required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    keys.set_defaults(func=cmd_keys)
    replay = sub.add_parser("replay", help="re-read a topic and reprocess it through the same handlers")
    replay.add_argument("--topic", required=True, help="e.g. question.events, assessment.refresh.requests or a .dlq topic")
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--from-beginning", action="store_true")
    where.add_argument("--from-offset", type=_partition_offset, metavar="PARTITION:OFFSET")
    where.add_argument("--from-time", type=_timestamp, metavar="ISO8601")
    replay.add_argument("--to-time", type=_timestamp, metavar="ISO8601", help="skip records after this time")
    replay.add_argument("--group", help="consumer group for the replay (default: a new one)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be read per partition, then stop")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)
    acls = sub.add_parser("acls", help="grant each principal the Kafka ACLs it needs, and only those (README, Security)")
    acls.add_argument("--api-principal", default="User:api")
    acls.add_argument("--consumer-principal", default="User:consumer")
    acls.add_argument("--bank-principal", default="User:bank", help="the question bank, writer of question events")
    acls.add_argument("--no-create-topics", action="store_true",
                      help="no CREATE for the consumer: the operator creates the topics before it starts")
    acls.add_argument("--dry-run", action="store_true", help="print the bindings, create nothing")
    acls.set_defaults(func=cmd_acls)
    publish = sub.add_parser("publish", help="send a question event as the question bank would")
    publish_sub = publish.add_subparsers(dest="event", required=True)
    deleted = publish_sub.add_parser("question-deleted", help="the bank deleted a question: refresh every assessment using it")
    deleted.add_argument("qid", type=int)
    publish.set_defaults(func=cmd_publish)
    dev = sub.add_parser("dev", help="run everything locally: embedded PostgreSQL, a broker, API, consumer, demo data")
    dev.add_argument("--data-dir", default=".dev",
                     help="where the embedded PostgreSQL (and with --broker kafka, the Kafka log) keeps its data")
    dev.add_argument("--port", type=int, default=8000, help="API port")
    dev.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                     help="tansu: a wheel, nothing to install (default); kafka: a local Apache Kafka "
                     "(needs Java 17+, and Maven for the first start)")
    dev.add_argument("--kafka-port", type=int, default=0, help="broker port (default: a free one)")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)  # a setting, not a bug: no traceback
        return 2
    # The services log JSON for machines; the commands a person runs, text
    # (LOG_FORMAT, when set, wins for all).
    fmt = settings.log_format if "LOG_FORMAT" in os.environ or args.command in ("api", "consumer") else "text"
    setup_logging(settings.log_level, fmt)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:  # read at start-up by a command (OTEL_* for tracing)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
