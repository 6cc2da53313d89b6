"""serving.coalesce: many requests of one process sent as few calls, each request answered
with its own answer, in order; a refused call fails every request it carried."""

from __future__ import annotations

import asyncio

import pytest

from raysplit.serving.app import Overloaded
from raysplit.serving.coalesce import Coalescer


class FakeTail:
    """Answers each message with its own bytes reversed; records the calls it got."""

    def __init__(self, refuse: bool = False, delay: float = 0.0) -> None:
        self.calls: list[list[bytes]] = []
        self.refuse, self.delay = refuse, delay
        self.out = self.most_out = 0

    async def infer_many_async(self, messages):
        self.calls.append(list(messages))
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        await asyncio.sleep(self.delay)
        self.out -= 1
        if self.refuse:
            raise Overloaded("serving 't' is overloaded: more than 1 requests are queued")
        return [{"echo": m[::-1]} for m in messages]


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_requests_in_flight_together_share_calls_and_get_their_own_answers():
    tail = FakeTail(delay=0.01)
    gw = Coalescer(tail, max_batch=8, wait_s=0.05)
    msgs = [bytes([i, i + 1]) for i in range(20)]

    async def main():
        return await asyncio.gather(*(gw.infer_async(m) for m in msgs))

    answers = _run(main())
    assert [a["echo"] for a in answers] == [m[::-1] for m in msgs]
    # 20 at once, at most 8 per call: two full calls leave at once, the last 4 after the wait
    assert [len(c) for c in tail.calls] == [8, 8, 4] and gw.calls == 3 and gw.requests == 20
    assert [m for c in tail.calls for m in c] == msgs


def test_with_one_call_in_flight_what_arrives_meanwhile_leaves_together_when_it_returns():
    tail = FakeTail(delay=0.05)
    gw = Coalescer(tail, max_batch=32, wait_s=0.0, max_in_flight=1)

    async def main():
        first = asyncio.ensure_future(gw.infer_async(b"\x00"))  # leaves at once (no wait)
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(gw.infer_async(bytes([i]))) for i in range(1, 6)]  # while it is out
        return await asyncio.gather(first, *rest)

    answers = _run(main())
    assert [a["echo"] for a in answers] == [bytes([i]) for i in range(6)]
    assert [len(c) for c in tail.calls] == [1, 5] and tail.most_out == 1 == gw.most_in_flight


def test_a_lone_request_leaves_after_the_wait_not_never():
    tail = FakeTail()
    gw = Coalescer(tail, max_batch=32, wait_s=0.001)
    assert _run(gw.infer_async(b"ab")) == {"echo": b"ba"}
    assert tail.calls == [[b"ab"]]


def test_a_refused_call_fails_each_request_it_carried_and_the_next_call_goes_on():
    tail = FakeTail(refuse=True)
    gw = Coalescer(tail, max_batch=4, wait_s=0.0)

    async def main():
        return await asyncio.gather(*(gw.infer_async(bytes([i])) for i in range(4)), return_exceptions=True)

    out = _run(main())
    assert len(out) == 4 and all(isinstance(e, Overloaded) and "overloaded" in str(e) for e in out)
    tail.refuse = False
    assert _run(gw.infer_async(b"xy")) == {"echo": b"yx"}


def test_an_answer_count_that_does_not_match_is_an_error_not_a_shifted_answer():
    class Short(FakeTail):
        async def infer_many_async(self, messages):
            return [{"echo": b""}] * (len(messages) - 1)

    gw = Coalescer(Short(), max_batch=2, wait_s=0.0)

    async def main():
        return await asyncio.gather(gw.infer_async(b"a"), gw.infer_async(b"b"), return_exceptions=True)

    out = _run(main())
    assert all(isinstance(e, RuntimeError) and "answered 1 of 2" in str(e) for e in out)


@pytest.mark.parametrize("kw, word", [({"max_batch": 0}, "max_batch must be >= 1, got 0"),
                                      ({"wait_s": -1.0}, "wait_s must be >= 0 s, got -1.0"),
                                      ({"max_in_flight": 0}, "max_in_flight must be >= 1, got 0")])
def test_bad_settings_are_named(kw, word):
    with pytest.raises(ValueError, match=word):
        Coalescer(FakeTail(), **kw)
