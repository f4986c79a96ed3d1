"""The pipeline's own notices travel through sinks but are never counted as records:
a lane's drop notice that a sink fails to deliver, at once or when its outbox drops it
later, leaves the accounting of the application's records exact."""

from __future__ import annotations

import logging

import aiologsinks as als
from aiologsinks._backoff import Backoff
from aiologsinks._notices import delivering_notice, is_notice
from aiologsinks._outbox import Loss
from aiologsinks._queue import notice

from .test_outbox import Rig


class Item:
    """An encoded record: a distinct object, as a sink's frames are."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


async def test_a_notice_the_outbox_drops_later_is_not_counted_as_a_lost_record() -> None:
    rig = Rig(buffer_size=5, backoff=Backoff(60.0, 2.0, 60.0))
    rig.peer.up = False  # an outage: everything waits in the buffer of 5
    records = [Item(f"r{i}") for i in range(20)]
    await rig.outbox.put(records[:3])
    the_notice = Item("notice")
    with delivering_notice():
        await rig.outbox.put([the_notice])
    for r in records[3:]:  # the buffer drops its oldest, the notice among them
        await rig.outbox.put([r])
    lost = [item for items, why in rig.lost for item in items if why is Loss.DROPPED]
    s = rig.outbox.statistics()
    assert the_notice not in lost and the_notice not in rig.outbox.buffer
    assert lost == records[:15]  # every record dropped is reported, each once
    assert s.dropped == 16 and s.pending == 5  # the outbox's own counts include it
    assert rig.outbox._notices == {}  # forgotten once gone


async def test_a_delivered_notice_is_forgotten_and_records_still_count() -> None:
    rig = Rig()
    the_notice = Item("notice")
    with delivering_notice():
        await rig.outbox.put([the_notice])
    assert rig.peer.got == [the_notice] and rig.outbox._notices == {}  # type: ignore[comparison-overlap]
    rig.peer.up = False
    rig.peer.error = ValueError("refused for good")  # not retryable: failed at once
    with delivering_notice():
        await rig.outbox.put([Item("notice 2")])
    await rig.outbox.put([Item("record")])
    assert [[str(i) for i in items] for items, _, _ in rig.failed] == [["record"]]


def test_a_sink_reports_a_notice_it_cannot_deliver_but_does_not_count_it() -> None:
    sink = als.NullSink()
    sink.handleError = lambda record: None  # type: ignore[method-assign]
    made = notice("aiologsinks: %d record(s) dropped", 3)
    assert is_notice(made) and not is_notice(logging.makeLogRecord({"msg": "x"}))
    try:
        raise OSError("down")
    except OSError:
        sink.report_error(made)
        sink.report_batch_error([logging.makeLogRecord({"msg": "x"}), made])
    assert sink.error_count == 1  # the one record, not the notice twice
