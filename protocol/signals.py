"""Signal names as the `signal` method and `down-signal` files accept them.

One parser for both sides: overlayctl validates what the user typed before sending it, and
overlayd reads the same words from the wire and from service directories. Names come from the
C module `_signal`, not `signal`: that one builds enums at import (~2 ms), which `overlayctl
signal` would pay on every run. Where two names share a number, the canonical one is the name
`signal.Signals` gives (tests/test_protocol.py checks they agree).
"""

from __future__ import annotations

import _signal

#: Second names of a number; `signal.Signals` names the number by its first name.
_ALIASES = frozenset({"SIGIOT", "SIGCLD", "SIGPOLL"})
_NUMBERS: dict[str, int] = {
    name: int(value)
    for name, value in vars(_signal).items()
    if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(value, int)
}
_NAMES: dict[int, str] = {n: name for name, n in _NUMBERS.items() if name not in _ALIASES}


def signal_number(sig: str | int) -> int:
    """`HUP`, `SIGHUP`, `sighup`, `"1"` or `1` → 1. Raises ValueError saying what is wrong."""
    nsig = _signal.NSIG
    if isinstance(sig, int):
        if not 0 < sig < nsig:
            raise ValueError(f"signal number out of range 1..{nsig - 1}: {sig}")
        return sig
    text = sig
    word = text.strip()
    if not word:
        raise ValueError("empty signal name")
    if word.isascii() and word.isdigit():
        number = int(word)
        if not 0 < number < nsig:
            raise ValueError(f"signal number out of range 1..{nsig - 1}: {text}")
        return number
    name = word.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = _NUMBERS.get(name)
    if number is None:
        raise ValueError(f"unknown signal: {text}")
    return number


def signal_name(number: int) -> str:
    """9 → `SIGKILL`; a number with no name (a real-time signal) → `signal 40`."""
    name = _NAMES.get(number)
    return f"signal {number}" if name is None else name
