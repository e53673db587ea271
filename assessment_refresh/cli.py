"""`assessment-refresh`: the one command line of the service."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from assessment_refresh.cli_options import (
    Parser,
    command_line_only,
    listening_port,
    own,
    port_number,
    resolve_own_options,
    setting,
)
from assessment_refresh.dev_extra import MissingDevExtra
from assessment_refresh.dev_settings import DEFAULT_DATA_DIR, use_running_dev
from shared.kafka_properties import ConfigurationError
from shared.log_setup import setup_logging
from shared.settings import Settings
from shared.version import __version__


def _settings(**flags: object) -> Settings:
    """The environment's settings; a command-line flag given wins over its variable."""
    return Settings.from_env(**{name: value for name, value in flags.items() if value is not None})


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from assessment_refresh.local_servers import port_taken
    from producer_api.app import create_app
    from producer_api.client_address import uvicorn_proxy_options

    if args.workers != 1:
        print(f"error: --workers {args.workers}: the API runs one worker per process; run more api processes "
              "behind a load balancer instead (assessment-refresh api --help says why)", file=sys.stderr)
        return 2
    settings = _settings(api_host=args.api_host, api_port=args.api_port)
    if port_taken(settings.api_host, settings.api_port):
        print(f"error: {settings.api_host}:{settings.api_port} is in use: stop what listens there, "
              "or choose another port with --port PORT (env API_PORT)", file=sys.stderr)
        return 2
    # log_config=None: uvicorn's lines go through our handler (JSON or text).
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port,
        log_level=settings.log_level.lower(), log_config=None,
        # No "Server: uvicorn" banner; the app's headers are producer_api/security_headers.py's.
        server_header=False, **uvicorn_proxy_options(settings),
    )
    return 0


def cmd_consumer(args: argparse.Namespace) -> int:
    from assessment_refresh.local_servers import port_taken
    from consumer.main import run_consumer

    settings = _settings(consumer_metrics_host=args.consumer_metrics_host,
                         consumer_metrics_port=args.consumer_metrics_port)
    if settings.consumer_metrics_port and port_taken(settings.consumer_metrics_host, settings.consumer_metrics_port):
        print(f"error: {settings.consumer_metrics_host}:{settings.consumer_metrics_port} is in use: stop what "
              "listens there, or choose another port with --metrics-port PORT (env CONSUMER_METRICS_PORT; "
              "0: no metrics port)", file=sys.stderr)
        return 2
    run_consumer(settings)
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


def cmd_dlq(args: argparse.Namespace) -> int:
    import json

    from assessment_refresh.dlq_list import as_json, as_lines, read_dead_letters
    from consumer.replay import StartPoint
    from shared.dlq import dlq_topic

    topic = dlq_topic(args.topic)  # the source topic's name works too
    if args.from_offset:
        start = StartPoint(partition=args.from_offset[0], offset=args.from_offset[1])
    elif args.from_time:
        start = StartPoint(since=args.from_time)
    else:
        start = StartPoint(beginning=True)
    letters = read_dead_letters(_settings(), topic, start, until=args.to_time)
    if args.json:
        print(json.dumps(as_json(topic, letters), indent=2))
    else:
        print("\n".join(as_lines(topic, letters)))
    return 0


def cmd_kafka_tool(args: argparse.Namespace) -> int:
    from assessment_refresh.apache_kafka import MissingTool
    from assessment_refresh.kafka_tool import run_tool

    try:
        return run_tool(args.tool, args.args, _settings().kafka_bootstrap_servers)
    except MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_dev(args: argparse.Namespace) -> int:
    from assessment_refresh.dev import run_dev

    try:
        return run_dev(Path(args.data_dir), api_port=args.api_port, kafka_port=args.kafka_port, broker=args.broker)
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


API_EPILOG = """\
No --workers beyond 1: every uvicorn worker would be a whole replica (its own
reply reader reading every reply, its own rate-limit buckets and its own
metrics registry) behind one shared port, so /metrics and /readyz would each
answer for whichever worker took the connection. Scale by running more api
processes, each on its own port, behind a load balancer (docker-compose.yml
runs two behind nginx; docs/operations.md#scaling)."""

MAIN_EPILOG = """\
Every setting is an environment variable (docs/configuration.md); an option's
--help names its variable. With `assessment-refresh dev` running in this
directory (./.dev/settings.env, or DEV_DATA_DIR), the other commands use its
settings when none of them is set otherwise, and say so on stderr."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="assessment-refresh", description=__doc__, epilog=MAIN_EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the REST API (uvicorn)", epilog=API_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    setting(api, "--host", "api_host", metavar="HOST")
    setting(api, "--port", "api_port", type=port_number, metavar="PORT")
    own(api, "--workers", "API_WORKERS", "worker processes: only 1, see below", default=1, convert=int, metavar="N")
    api.set_defaults(func=cmd_api)

    consumer = sub.add_parser("consumer", help="run one consumer-group member")
    setting(consumer, "--metrics-host", "consumer_metrics_host", metavar="HOST")
    setting(consumer, "--metrics-port", "consumer_metrics_port", type=port_number, metavar="PORT")
    consumer.set_defaults(func=cmd_consumer)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(func=cmd_migrate)

    load = sub.add_parser("load", help="import companies, API keys, questions and assessments from JSON")
    load.add_argument("file", help="the JSON file (docs/loading-data.md)")
    own(load, "--quiet", "LOAD_QUIET", "no progress bar (the summary line stays)", flag_only=True, default=False)
    load.set_defaults(func=cmd_load)

    keys = sub.add_parser("keys", help="create or revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a company and print it once")
    command_line_only(create, "--company", type=int, required=True, help="the company the key is for")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="the key, as printed by keys create")
    keys.set_defaults(func=cmd_keys)

    replay = sub.add_parser("replay", help="re-read a topic and reprocess it through the same handlers")
    command_line_only(replay, "--topic", required=True,
                      help="e.g. question.events, assessment.refresh.requests or a .dlq topic")
    where = replay.add_mutually_exclusive_group(required=True)
    command_line_only(where, "--from-beginning", action="store_true", help="every record the topic holds")
    command_line_only(where, "--from-offset", type=_partition_offset, metavar="PARTITION:OFFSET",
                      help="one partition, from this offset")
    command_line_only(where, "--from-time", type=_timestamp, metavar="ISO8601", help="records from this time on")
    command_line_only(replay, "--to-time", type=_timestamp, metavar="ISO8601", help="skip records after this time")
    own(replay, "--group", "REPLAY_GROUP", "consumer group for the replay (default: a new one)", metavar="GROUP")
    command_line_only(replay, "--dry-run", action="store_true", help="print what would be read per partition, then stop")
    own(replay, "--quiet", "REPLAY_QUIET", "no progress bar", flag_only=True, default=False)
    replay.set_defaults(func=cmd_replay)

    dlq = sub.add_parser("dlq", help="list a dead-letter topic's records, where they came from and why they failed; "
                         "reads only (commits no offset): re-process them with replay")
    command_line_only(dlq, "--topic", required=True,
                      help="the DLQ topic, e.g. question.events.dlq (or its source topic's name)")
    dlq_where = dlq.add_mutually_exclusive_group()
    command_line_only(dlq_where, "--from-offset", type=_partition_offset, metavar="PARTITION:OFFSET",
                      help="one partition, from this offset (default: every partition from the beginning)")
    command_line_only(dlq_where, "--from-time", type=_timestamp, metavar="ISO8601",
                      help="records dead-lettered at or after this time")
    command_line_only(dlq, "--to-time", type=_timestamp, metavar="ISO8601", help="records dead-lettered up to this time")
    command_line_only(dlq, "--json", action="store_true", help="one JSON document: records, count, counts by error")
    dlq.set_defaults(func=cmd_dlq)

    from assessment_refresh.kafka_tool import TOOLS

    tool = sub.add_parser("kafka-tool", help="run one of Kafka's own command-line tools from the local Kafka's jars "
                          "(needs Java 17+, and Maven the first time)",
                          description="Runs Kafka's tool NAME with ARGS, as bin/NAME.sh would; --bootstrap-server "
                          "defaults to KAFKA_BOOTSTRAP_SERVERS (a running dev's broker next to it).")
    tool.add_argument("tool", choices=sorted(TOOLS), metavar="NAME", help=f"one of: {', '.join(sorted(TOOLS))}")
    tool.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the tool's own arguments (its --help)")
    tool.set_defaults(func=cmd_kafka_tool)

    acls = sub.add_parser("acls", help="grant each principal the Kafka ACLs it needs, and only those (docs/security.md)")
    own(acls, "--api-principal", "ACLS_API_PRINCIPAL", "the API's principal", default="User:api")
    own(acls, "--consumer-principal", "ACLS_CONSUMER_PRINCIPAL", "the consumer's principal", default="User:consumer")
    own(acls, "--bank-principal", "ACLS_BANK_PRINCIPAL", "the question bank, writer of question events",
        default="User:bank")
    own(acls, "--no-create-topics", "ACLS_NO_CREATE_TOPICS",
        "no CREATE for the consumer: the operator creates the topics before it starts", flag_only=True, default=False)
    command_line_only(acls, "--dry-run", action="store_true", help="print the bindings, create nothing")
    acls.set_defaults(func=cmd_acls)

    publish = sub.add_parser("publish", help="send a question event as the question bank would")
    publish_sub = publish.add_subparsers(dest="event", required=True)
    deleted = publish_sub.add_parser("question-deleted", help="the bank deleted a question: refresh every assessment using it")
    deleted.add_argument("qid", type=int, help="the deleted question's id")
    publish.set_defaults(func=cmd_publish)

    dev = sub.add_parser("dev", help="run everything locally: embedded PostgreSQL, a broker, API, consumer, demo data "
                         "(needs the dev extra: pip install 'assessment-refresh[dev]')")
    own(dev, "--data-dir", "DEV_DATA_DIR", "where the embedded PostgreSQL (and with --broker kafka, the Kafka log) "
        "keeps its data, and where the running dev's settings.env is", default=DEFAULT_DATA_DIR, metavar="DIR")
    own(dev, "--api-port", "DEV_API_PORT", "the API's port", default=8000, convert=_listening_port, metavar="PORT")
    dev.add_argument("--port", dest="api_port", type=listening_port, help=argparse.SUPPRESS)  # its first name
    own(dev, "--kafka-port", "DEV_KAFKA_PORT", "the broker's port", default=9092, convert=_listening_port, metavar="PORT")
    own(dev, "--broker", "DEV_BROKER", "tansu: a wheel of the dev extra, nothing else to install; kafka: a local Apache Kafka "
        "(needs Java 17+, and Maven for the first start)", default="tansu", convert=_broker, metavar="{tansu,kafka}")
    dev.set_defaults(func=cmd_dev)
    return parser


def _listening_port(value: str) -> int:
    return listening_port(value)


def _broker(value: str) -> str:
    from assessment_refresh.dev import BROKERS

    if value not in BROKERS:
        raise argparse.ArgumentTypeError(f"one of {', '.join(BROKERS)}, not {value!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_own_options(args, os.environ)
        # dev makes the file; every other command may use it.
        found = None if args.command == "dev" else use_running_dev(os.environ, Path.cwd())
        settings = _settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)  # a setting, not a bug: no traceback
        return 2
    # The services log JSON for machines; the commands a person runs, text
    # (LOG_FORMAT, when set, wins for all).
    fmt = settings.log_format if "LOG_FORMAT" in os.environ or args.command in ("api", "consumer") else "text"
    setup_logging(settings.log_level, fmt)
    if found:
        if fmt == "json":  # every line of a service's stderr stays JSON
            logging.getLogger(__name__).info(found)
        else:
            print(found, file=sys.stderr)
    from sqlalchemy.exc import OperationalError

    try:
        return int(args.func(args))
    except ConfigurationError as exc:  # read at start-up by a command (OTEL_* for tracing)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        # The database did not answer: say where it was looked for, not a traceback.
        print(f"error: PostgreSQL at {_shown_url(settings.database_url)} did not answer: "
              f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}", file=sys.stderr)
        return 1
    except MissingDevExtra as exc:
        print(f"error: {exc}", file=sys.stderr)  # an install step, not a bug: no traceback
        return 2


def _shown_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
