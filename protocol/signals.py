"""Signal names as the `signal` method and `down-signal` files accept them.

One parser for both sides: overlayctl validates what the user typed before sending it, and
overlayd reads the same words from the wire and from service directories. `signal` is imported
inside the function: it pulls in `enum`, which `overlayctl status` never needs.
"""

from __future__ import annotations


def signal_number(text: str) -> int:
    """`HUP`, `SIGHUP`, `sighup` or `1` → 1. Raises ValueError saying what is wrong."""
    import signal

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
