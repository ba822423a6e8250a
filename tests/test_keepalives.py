"""Keepalives: which subscriptions a pass asks for a keepalive comment (pure logic)."""

from __future__ import annotations

import asyncio

from notifications.hub.keepalives import Keepalives
from notifications.hub.subscription import Subscription


def _subscription(quiet_since: float) -> Subscription:
    subscription = Subscription(1, "key")
    subscription.quiet_since = quiet_since
    return subscription


async def _asked(subscription: Subscription) -> bool:
    """Whether the stream would send a keepalive now: its next batch comes at once, empty."""
    waiting = asyncio.ensure_future(subscription.next_batch())
    await asyncio.sleep(0)
    if waiting.done():
        return waiting.result() == []
    waiting.cancel()
    return False


async def test_a_pass_asks_only_the_subscriptions_quiet_for_a_whole_period() -> None:
    keepalives = Keepalives()
    quiet, recent = _subscription(100.0), _subscription(110.0)
    for subscription in (quiet, recent):
        keepalives.add(subscription)

    assert keepalives.ask(now=115.0, keepalive=15.0) == 1
    assert await _asked(quiet) and not await _asked(recent)


async def test_one_that_sent_something_since_it_was_added_is_due_from_then() -> None:
    keepalives = Keepalives()
    busy = _subscription(100.0)
    keepalives.add(busy)
    busy.quiet_since = 112.0  # sent an event

    assert keepalives.ask(now=120.0, keepalive=15.0) == 0
    assert keepalives.ask(now=127.0, keepalive=15.0) == 1
    assert len(keepalives) == 1


async def test_an_asked_subscription_is_asked_again_a_period_later_if_still_quiet() -> None:
    keepalives = Keepalives()
    stuck = _subscription(100.0)  # a stream that does not take its keepalive
    keepalives.add(stuck)

    assert keepalives.ask(now=115.0, keepalive=15.0) == 1
    assert keepalives.ask(now=129.0, keepalive=15.0) == 0
    assert keepalives.ask(now=130.0, keepalive=15.0) == 1


async def test_a_subscription_that_took_its_keepalive_waits_a_period_again() -> None:
    keepalives = Keepalives()
    subscription = _subscription(100.0)
    keepalives.add(subscription)
    assert keepalives.ask(now=115.0, keepalive=15.0) == 1
    assert await asyncio.wait_for(subscription.next_batch(), 1) == []  # the stream takes it
    taken = subscription.quiet_since

    assert keepalives.ask(now=taken + 14.0, keepalive=15.0) == 0
    assert keepalives.ask(now=taken + 15.0, keepalive=15.0) == 1


async def test_closed_subscriptions_are_dropped_when_they_come_up() -> None:
    keepalives = Keepalives()
    closed = _subscription(100.0)
    keepalives.add(closed)
    closed.close()

    assert keepalives.ask(now=200.0, keepalive=15.0) == 0
    assert len(keepalives) == 0


async def test_a_subscription_is_due_exactly_a_period_after_it_went_quiet_at_any_reading() -> None:
    # A monotonic reading for which (t + 15.0) - 15.0 < t in floating point: the comparison
    # must not subtract (CI once failed the test above on such a reading).
    quiet_since = 8189.959782075
    assert (quiet_since + 15.0) - 15.0 < quiet_since
    keepalives = Keepalives()
    subscription = _subscription(quiet_since)
    keepalives.add(subscription)

    assert keepalives.ask(now=quiet_since + 14.999, keepalive=15.0) == 0
    assert keepalives.ask(now=quiet_since + 15.0, keepalive=15.0) == 1
