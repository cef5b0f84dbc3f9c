"""Signal names for overlayctl: parsing what users type, naming what services died of.

Both come from protocol/signals.py, which reads the C module `_signal` (no enum import).
"""

from __future__ import annotations

from protocol.signals import signal_name as _name_of_number
from protocol.signals import signal_number


def parse_signal(text: str) -> str | int:
    """Turn `HUP`, `SIGHUP`, `sighup` or `1` into what the `signal` RPC takes.

    Names come back canonical (`"SIGHUP"`; aliases such as `IOT` become `"SIGABRT"`),
    numbers come back as ints. Raises ValueError for anything that is not a signal.
    """
    number = signal_number(text)
    word = text.strip()
    return number if word.isascii() and word.isdigit() else _name_of_number(number)


def signal_name(sig: int | str) -> str:
    """Name a signal for display: 9 → `SIGKILL`, `"KILL"` → `SIGKILL`, 99 → `signal 99`."""
    if isinstance(sig, str):
        if sig.isdigit():
            sig = int(sig)
        else:
            name = sig.upper()
            return name if name.startswith("SIG") else "SIG" + name
    return _name_of_number(sig)
