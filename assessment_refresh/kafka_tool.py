"""`assessment-refresh kafka-tool NAME ARGS...`: Kafka's own command-line tools, from the local Kafka's jars.

The jars the local Apache Kafka runs from (assessment_refresh/apache_kafka:
resolved once by Maven into the cache, never into the tree) include
``kafka-tools``; this runs one of its tools as the distribution's
``bin/NAME.sh`` would (``java -Xmx256M -cp <jars> <main class> ARGS``), so the
tools an operator reaches for (`kafka-consumer-groups`, `kafka-console-consumer`,
`kafka-topics`, ...) work against `dev --broker kafka`, the local Kafka of the
tests, and any other cluster, with nothing more installed than Java.

``--bootstrap-server`` defaults to KAFKA_BOOTSTRAP_SERVERS (so, next to a
running dev, to its broker); the tools read security settings from their own
``--command-config FILE``, not from the service's KAFKA_* variables.
"""

from __future__ import annotations

import subprocess

from assessment_refresh.apache_kafka.jars import broker_classpath, java_command

# Tool name (as the distribution's bin/ scripts are named) -> main class, Kafka 4.1.1.
TOOLS: dict[str, str] = {
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
}
TOOLS_LOG4J_CONFIG = "tools-log4j2.properties"


def tool_command(tool: str, args: list[str], bootstrap_servers: str) -> list[str]:
    """The java command line of ``tool`` with ``args`` (``--bootstrap-server`` added when absent)."""
    from assessment_refresh.apache_kafka.jars import LOG4J_CONFIG

    if not any(a == "--bootstrap-server" or a.startswith("--bootstrap-server=") for a in args):
        args = ["--bootstrap-server", bootstrap_servers, *args]
    log4j = LOG4J_CONFIG.with_name(TOOLS_LOG4J_CONFIG)
    return [java_command(), "-Xmx256M", f"-Dlog4j2.configurationFile={log4j}", "-cp", broker_classpath(),
            TOOLS[tool], *args]


def run_tool(tool: str, args: list[str], bootstrap_servers: str) -> int:
    """Run it in the foreground; its exit status is ours."""
    return subprocess.call(tool_command(tool, args, bootstrap_servers))
