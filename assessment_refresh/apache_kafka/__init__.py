"""A local Apache Kafka from Maven artifacts, for `dev --broker kafka`, the tests and the benchmark."""

from assessment_refresh.apache_kafka.cluster import ApacheKafka, KafkaNode
from assessment_refresh.apache_kafka.jars import MissingTool, kafka_version, missing_tools

__all__ = ["ApacheKafka", "KafkaNode", "MissingTool", "kafka_version", "missing_tools"]
