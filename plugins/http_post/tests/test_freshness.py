"""Request numbers: each is taken once, in any order within the window, never twice."""

from __future__ import annotations

import random

from flyway_http_post.freshness import WINDOW, RequestWindow
from hypothesis import given, settings
from hypothesis import strategies as st


def test_the_open_is_zero_and_every_number_is_taken_once() -> None:
    window = RequestWindow()
    assert not window.take(0)
    assert window.take(1) and window.take(5) and window.take(3)
    assert not window.take(3) and not window.take(5) and not window.take(1)
    assert window.take(2) and window.take(4)
    assert window.top == 5


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 300), spread=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_requests_reordered_within_the_window_are_all_taken_and_replays_none(
    count: int, spread: int, seed: int
) -> None:
    """Numbered in order, arriving shuffled within ``spread``; then every one replayed."""
    rng = random.Random(seed)
    numbers = sorted(range(1, count + 1), key=lambda n: n + rng.uniform(0, spread))
    window = RequestWindow()
    assert all(window.take(n) for n in numbers)
    replays = numbers[:]
    rng.shuffle(replays)
    assert not any(window.take(n) for n in replays)


def test_a_number_older_than_the_window_is_refused_and_a_leap_forgets_the_past() -> None:
    window = RequestWindow()
    assert window.take(WINDOW + 10)
    assert not window.take(10)  # overtaken by WINDOW others: its sender retries it anew
    assert window.take(11)
    assert window.take(3 * WINDOW)
    assert not window.take(WINDOW + 10)
