"""loadgen.traffic.relay.RelayLedger: a worker's records reach the master once each, in batches,
and a channel that refuses for a while delays them rather than dropping them."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.traffic.relay import LEDGER_MESSAGE, RelayLedger


class Busy(Exception):
    """Stands for Locust's RPCSendError (the channel's queue is full)."""


class Channel:
    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.delivered: list[dict[str, Any]] = []
        self.attempts = 0

    def send(self, kind: str, batch: list[dict[str, Any]]) -> None:
        assert kind == LEDGER_MESSAGE
        self.attempts += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise Busy
        self.delivered.extend(batch)


def test_a_refused_batch_is_sent_again_until_it_goes_through() -> None:
    channel = Channel(refusals=3)
    pauses: list[float] = []
    relay = RelayLedger(channel.send, worker="w1", flush_every=4, retry_on=(Busy,), sleep=pauses.append)
    for i in range(10):
        relay.append({"rid": f"r{i}"})
    relay.close()
    assert [r["rid"] for r in channel.delivered] == [f"r{i}" for i in range(10)]
    assert [r["wseq"] for r in channel.delivered] == list(range(10))
    assert {r["worker"] for r in channel.delivered} == {"w1"}
    assert (channel.attempts, len(pauses), relay.lost, relay.sent_batches) == (6, 3, 0, 3)


def test_after_give_up_s_the_batch_counts_as_lost_and_the_error_goes_up() -> None:
    channel = Channel(refusals=10**9)
    relay = RelayLedger(
        channel.send, worker="w1", flush_every=100, retry_on=(Busy,), give_up_s=0.0, sleep=print
    )
    relay.append({"rid": "a"})
    relay.append({"rid": "b"})
    with pytest.raises(Busy):
        relay.flush()
    assert relay.lost == 2 and channel.delivered == []


def test_other_errors_are_not_retried() -> None:
    def broken(kind: str, batch: Any) -> None:
        raise TypeError("not serializable")

    relay = RelayLedger(broken, worker="w1", flush_every=1, retry_on=(Busy,), sleep=print)
    with pytest.raises(TypeError):
        relay.append({"rid": "a"})
    assert relay.lost == 0
