"""Signal names as the `signal` method and `down-signal` files accept them.

One parser for both sides: overlayctl validates what the user typed before sending it, and
overlayd reads the same words from the wire and from service directories. `signal` is imported
inside the function: it pulls in `enum`, which `overlayctl status` never needs.
"""

from __future__ import annotations


def signal_number(sig: str | int) -> int:
    """`HUP`, `SIGHUP`, `sighup`, `"1"` or `1` → 1. Raises ValueError saying what is wrong."""
    import signal

    if isinstance(sig, int):
        if not 0 < sig < signal.NSIG:
            raise ValueError(f"signal number out of range 1..{signal.NSIG - 1}: {sig}")
        return sig
    text = sig
    word = text.strip()
    if not word:
        raise ValueError("empty signal name")
    if word.isascii() and word.isdigit():
        number = int(word)
        if not 0 < number < signal.NSIG:
            raise ValueError(f"signal number out of range 1..{signal.NSIG - 1}: {text}")
        return number
    name = word.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal: {text}") from None


def signal_name(number: int) -> str:
    """9 → `SIGKILL`; a number with no name (a real-time signal) → `signal 40`."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
