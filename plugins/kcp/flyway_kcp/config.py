"""The KCP knobs: kcptun's ``--kcp-mode`` presets, the MTU and the windows, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from flyway_core import ConfigError, Settings

__all__ = [
    "DEFAULT_FEC",
    "DEFAULT_MODE",
    "DEFAULT_MTU",
    "DEFAULT_RCVWND",
    "DEFAULT_SNDWND",
    "MODES",
    "KcpConfig",
    "parse_fec",
]

# kcptun's presets: (nodelay, interval ms, fast resend, no congestion window).
MODES: dict[str, tuple[int, int, int, int]] = {
    "normal": (0, 40, 2, 1),
    "fast": (0, 30, 2, 1),
    "fast2": (1, 20, 2, 1),
    "fast3": (1, 10, 2, 1),
}
DEFAULT_MODE = "fast"  # measured on the lossy link (README): fewest resends at the same speed
DEFAULT_MTU = 1350  # bytes per UDP payload, seal included (kcptun's default)
DEFAULT_SNDWND = 1024  # segments in flight; chosen on the lossy link (README)
DEFAULT_RCVWND = 1024
DEFAULT_FEC = (10, 3)  # measured both ways on the lossy link (README): it pays
MAX_SHARDS = 32  # data + parity shards per group; parity is at most the data (M <= K)
MIN_MTU = 256
MAX_MTU = 9000
MAX_WINDOW = 32768


@dataclass(frozen=True, slots=True)
class KcpConfig:
    """How one end runs its KCP conversations."""

    mode: str = DEFAULT_MODE
    mtu: int = DEFAULT_MTU
    sndwnd: int = DEFAULT_SNDWND
    rcvwnd: int = DEFAULT_RCVWND
    fec: tuple[int, int] = DEFAULT_FEC  # (data, parity) datagrams per group; (0, 0) is off

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--kcp-mode {self.mode!r}: choose from {', '.join(MODES)}")
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ConfigError(f"--kcp-mtu {self.mtu} is outside {MIN_MTU}-{MAX_MTU}")
        for name, value in (("sndwnd", self.sndwnd), ("rcvwnd", self.rcvwnd)):
            if not 16 <= value <= MAX_WINDOW:
                raise ConfigError(f"--kcp-{name} {value} is outside 16-{MAX_WINDOW}")
        k, m = self.fec
        if (k, m) != (0, 0) and not (1 <= m <= k and k + m <= MAX_SHARDS):
            raise ConfigError(
                f"--kcp-fec {k},{m}: need 1+ parity, no more parity than data, {MAX_SHARDS} in all"
            )

    @property
    def nodelay(self) -> tuple[int, int, int, int]:
        """The preset's ``(nodelay, interval, resend, nc)`` for ``ikcp_nodelay``."""
        return MODES[self.mode]

    @classmethod
    def from_settings(cls, settings: Settings) -> KcpConfig:
        """Read ``--kcp-mode``, ``--kcp-mtu``, ``--kcp-sndwnd`` and ``--kcp-rcvwnd``."""
        return cls(
            mode=settings.option("kcp_mode", DEFAULT_MODE),
            mtu=settings.option("kcp_mtu", DEFAULT_MTU),
            sndwnd=settings.option("kcp_sndwnd", DEFAULT_SNDWND),
            rcvwnd=settings.option("kcp_rcvwnd", DEFAULT_RCVWND),
            fec=parse_fec(settings.option("kcp_fec", "{},{}".format(*DEFAULT_FEC))),
        )


def parse_fec(text: str) -> tuple[int, int]:
    """``K,M`` (data and parity datagrams per group) or ``off``; ConfigError otherwise."""
    if text.strip().lower() in ("off", "0", "0,0"):
        return (0, 0)
    data, _, parity = text.partition(",")
    try:
        return (int(data), int(parity))
    except ValueError:
        raise ConfigError(f"--kcp-fec {text!r}: expected K,M (10,3) or off") from None
