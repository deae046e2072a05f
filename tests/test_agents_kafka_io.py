"""Pure pieces of the worker's Kafka clients (agents/runtime/kafka_clients.py): which records
of a poll survive a rebalance inside it, and which transaction errors the loop retries."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from agents.runtime.engine import Record, record
from agents.runtime.kafka_clients import DeliveryError, _current, is_retriable_txn


def rec(topic: str, partition: int, offset: int) -> Record:
    return record(topic, partition, offset, None, b"{}", ())


def offsets(records: list[Record]) -> list[tuple[str, int, int]]:
    return [(r.topic(), r.partition(), r.offset()) for r in records]


def test_records_of_partitions_no_longer_assigned_are_dropped() -> None:
    got = _current([rec("t", 0, 5), rec("t", 1, 7), rec("t", 0, 6)], {("t", 0)})
    assert offsets(got) == [("t", 0, 5), ("t", 0, 6)]


def test_a_partition_given_back_within_one_poll_keeps_only_the_restart() -> None:
    # Read 10, 11; revoked and assigned again; the fetch restarts at the committed 10.
    got = _current(
        [rec("t", 0, 10), rec("t", 1, 3), rec("t", 0, 11), rec("t", 0, 10), rec("t", 0, 11)],
        {("t", 0), ("t", 1)},
    )
    assert offsets(got) == [("t", 1, 3), ("t", 0, 10), ("t", 0, 11)]


def test_only_abortable_errors_and_lost_deliveries_are_aborted_and_retried() -> None:
    assert is_retriable_txn(DeliveryError("2 records not acknowledged"))
    abortable = KafkaError(KafkaError._STATE, "abort needed", txn_requires_abort=True)
    assert is_retriable_txn(KafkaException(abortable))
    # A timeout is repeated by BatchProducer.commit, not answered with an abort.
    timed_out = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
    assert not is_retriable_txn(KafkaException(timed_out))
    fenced = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    assert not is_retriable_txn(KafkaException(fenced))
    assert not is_retriable_txn(RuntimeError("a bug"))
    assert not is_retriable_txn(ValueError("an agent's bad state"))
