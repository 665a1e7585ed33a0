"""Chosen passwords that are easy to guess offline get a warning at start; strong ones none."""

from __future__ import annotations

import secrets

import pytest
from flyway_procs import flyway

from flyway_core.passwords import weakness
from flyway_core.testing import free_port, wait_port


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("hunter2", "common"),
        ("Password123!", "common"),
        ("qwerty", "common"),
        ("aaaaaaaaaaaaaaaa", "repeats"),
        ("k7#Qz", "short"),
        ("Tr0ub4dor&3", "short"),
    ],
)
def test_weak_passwords_are_named_with_the_reason(password: str, why: str) -> None:
    reason = weakness(password)
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "password",
    ["correct horse battery staple", secrets.token_urlsafe(18), "vX9#mQ2$wL7@pR4!"],
)
def test_long_random_passwords_pass(password: str) -> None:
    assert weakness(password) is None


def _stderr_of_server(*args: str) -> str:
    port = free_port()
    with flyway([f"127.0.0.1:{port}", *args]) as server:
        wait_port(port)
        server.terminate()
        _, err = server.communicate(timeout=10)
    return err


def test_a_server_with_a_common_password_warns_once() -> None:
    err = _stderr_of_server("-p", "hunter2")
    lines = [line for line in err.splitlines() if "password is weak" in line]
    assert len(lines) == 1 and "offline" in lines[0]


def test_a_server_with_a_generated_or_strong_password_does_not_warn() -> None:
    assert "weak" not in _stderr_of_server()
    assert "weak" not in _stderr_of_server("-p", "correct horse battery staple")
