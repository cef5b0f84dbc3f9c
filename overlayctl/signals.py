"""Signal names for overlayctl: parsing what users type, naming what services died of.

The `signal` module is imported inside the functions, not at the top: it pulls in `enum`,
and `overlayctl status` / `check` only need it when a service actually died of a signal.
"""

from __future__ import annotations

from protocol.signals import signal_name as _name_of_number
from protocol.signals import signal_number


def parse_signal(text: str) -> str | int:
    """Turn `HUP`, `SIGHUP`, `sighup` or `1` into what the `signal` RPC takes.

    Names come back canonical (`"SIGHUP"`; aliases such as `IOT` become `"SIGABRT"`),
    numbers come back as ints. Raises ValueError for anything that is not a signal.
    """
    import signal

    number = signal_number(text)
    word = text.strip()
    return number if word.isascii() and word.isdigit() else signal.Signals(number).name


#: Where two names share a number, the one `signal.Signals` calls it by.
_ALIASES = frozenset({"SIGIOT", "SIGCLD", "SIGPOLL"})
_NAMES: dict[int, str] = {}


def _number_name(number: int) -> str:
    """9 → `SIGKILL`, from the C `_signal` module: `status` shows the signal a service died
    of, and importing `signal` (which builds its enums) would cost it ~2 ms."""
    if not _NAMES:
        import _signal

        for name, value in vars(_signal).items():
            if name.startswith("SIG") and "_" not in name and name not in _ALIASES:
                _NAMES[int(value)] = name
    return _NAMES.get(number) or _name_of_number(number)


def signal_name(sig: int | str) -> str:
    """Name a signal for display: 9 → `SIGKILL`, `"KILL"` → `SIGKILL`, 99 → `signal 99`."""
    if isinstance(sig, str):
        if sig.isdigit():
            sig = int(sig)
        else:
            name = sig.upper()
            return name if name.startswith("SIG") else "SIG" + name
    return _number_name(sig)
