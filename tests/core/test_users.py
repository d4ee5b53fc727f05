"""The active-users sketch against exact distinct counts."""

import pytest

from otelbot.core.users import ActiveUsers, HyperLogLog


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_estimate_within_a_few_percent_of_exact_count(n: int) -> None:
    users = ActiveUsers(clock=lambda: 1_000_000.0)
    exact = set()
    # Telegram-like ids, each user seen several times
    for i in range(n):
        uid = 5_000_000_000 + i * 7919
        exact.add(uid)
        users.add(uid)
        if i % 10 == 0:
            users.add(uid)  # repeats must not count twice
    estimates = users.estimates()
    for window in ("5m", "1h", "24h"):
        error = abs(estimates[window] - len(exact)) / len(exact)
        assert error < 0.06, (window, estimates[window], len(exact), error)


def test_memory_is_fixed_whatever_the_number_of_users() -> None:
    small, large = ActiveUsers(), ActiveUsers()
    for i in range(10):
        small.add(i)
    for i in range(200_000):
        large.add(i)
    assert small.memory_bytes == large.memory_bytes <= 20 * 1024


def test_windows_slide_users_age_out() -> None:
    now = [0.0]
    users = ActiveUsers(clock=lambda: now[0])
    for uid in range(500):
        users.add(uid)
    now[0] = 10 * 60  # 10 minutes later: gone from 5m, still in 1h and 24h
    for uid in range(1000, 1100):
        users.add(uid)
    est = users.estimates()
    assert 90 <= est["5m"] <= 110
    assert 570 <= est["1h"] <= 630
    now[0] = 2 * 3600  # 2 hours later: only the 24h window remembers
    est = users.estimates()
    assert est["5m"] == 0 and est["1h"] == 0
    assert 570 <= est["24h"] <= 630
    now[0] = 40 * 3600
    assert users.estimates()["24h"] == 0


def test_hll_merge() -> None:
    a, b = HyperLogLog(), HyperLogLog()
    for i in range(3000):
        a.add(i)
    for i in range(2000, 5000):
        b.add(i)
    a.merge(b)
    assert abs(a.estimate() - 5000) / 5000 < 0.06


def test_the_gauge_says_nothing_before_the_first_user_then_one_value_per_window() -> None:
    from otelbot.core.users import observations

    users = ActiveUsers(clock=lambda: 1_000_000.0)
    assert observations(users, "w") == []  # a library that handled no update: silent
    for user in range(3):
        users.add(7000 + user)
    seen = {o.attributes["w"]: o.value for o in observations(users, "w")}
    assert set(seen) == {"5m", "1h", "24h"}
    assert all(2.5 < v < 3.5 for v in seen.values())
