"""flyway-socks5 wiring: -D rules, credentials from the environment, the listing."""

from __future__ import annotations

import flyway_socks5
import pytest
from flyway_socks5.base import Credentials

from flyway_core import Address, ConfigError, Settings
from flyway_core.plugins import Plugins, make_plugin_manager


def test_no_dash_d_registers_nothing() -> None:
    assert flyway_socks5.register_listeners(Settings()) == []


@pytest.mark.parametrize(
    ("rule", "bind", "credentials"),
    [
        ("1080", Address("127.0.0.1", 1080), None),
        (":1080", Address("127.0.0.1", 1080), None),
        ("0.0.0.0:1080", Address("0.0.0.0", 1080), None),
        ("[::1]:1080", Address("::1", 1080), None),
        ("user:p@ss:w@1080", Address("127.0.0.1", 1080), Credentials(b"user", b"p@ss:w")),
        ("u:p@[::]:1080", Address("::", 1080), Credentials(b"u", b"p")),
    ],
)
def test_rules_name_a_bind_address_and_maybe_credentials(
    rule: str, bind: Address, credentials: Credentials | None
) -> None:
    listener = flyway_socks5.parse_rule(rule)
    assert (listener.bind, listener.credentials) == (bind, credentials)


@pytest.mark.parametrize("rule", ["", "nope", "0", "70000", "user@1080", ":p@1080", "::1:1080"])
def test_a_bad_rule_is_a_config_error(rule: str) -> None:
    with pytest.raises(ConfigError, match="-D"):
        flyway_socks5.parse_rule(rule)


def test_credentials_from_the_environment_apply_to_ports_without_their_own() -> None:
    settings = Settings(options={"socks5": ["1080", "a:b@1081"], "socks5_auth": "env:secret"})
    first, second = flyway_socks5.register_listeners(settings)
    assert first.credentials == Credentials(b"env", b"secret")
    assert second.credentials == Credentials(b"a", b"b")


def test_a_config_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        flyway_socks5.parse_rule("user:hunter2@nope")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(Credentials(b"user", b"hunter2"))


def test_listing_shows_what_the_plugin_provides() -> None:
    pm = make_plugin_manager(entry_points=False)
    pm.register(flyway_socks5, name="socks5")
    info = Plugins(pm).describe(Settings())["socks5"]
    assert info.hooks == ["add_options", "register_listeners"]
