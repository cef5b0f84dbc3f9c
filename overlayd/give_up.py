"""When to stop restarting a service: the death tally, start retries, timeout-up.

Files in the service directory (all optional):

    max-death-tally  how many deaths are remembered (s6: default 100, at most 4096). The tally
                     is written to `supervise/death_tally` in s6's format when the service's
                     directory has a `supervise/`, so `s6-permafailon` and `s6-svdt` in a
                     `finish` script read it as under s6-supervise.
    start-retries    how many times a failed start is retried before giving up (supervisord's
                     `startretries`): with N, the (N+1)th death in a row that comes less than
                     `start-secs` after its start makes the service `failed`, with its reason.
                     Absent: never give up (s6's behaviour: one start a second, for ever).
    start-secs       seconds (decimals allowed) a start must stay up to count as successful
                     (supervisord's `startsecs`); default 1, s6's one-second rule.
    timeout-up       ms a service with a notification-fd may take to become ready (s6-rc's
                     file); past it the start has failed: the service is stopped and `failed`.

The names are the ones their users already know: s6's and s6-rc's files keep theirs and their
milliseconds; the two supervisord settings keep supervisord's words, hyphenated like every file
of a service directory, and `start-secs` says its unit in its name as `startsecs` does.
"""

from __future__ import annotations

import os
from _collections import deque

from .check_specs import DEFAULT_MAX_DEATH_TALLY

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .check_specs import GiveUpPolicy

TAI_OFFSET = (1 << 62) + 10  # TAI64 label of the Unix epoch, as skalibs computes it


class DeathTally:
    """The last `limit` deaths of a service: (epoch seconds, exit code or 128+N, signal or 0)."""

    __slots__ = ("deaths",)

    def __init__(self, limit: int = DEFAULT_MAX_DEATH_TALLY) -> None:
        self.deaths: deque[tuple[float, int, int]] = deque(maxlen=limit)

    def add(self, at: float, code: int | None, signum: int | None) -> None:
        if signum:
            self.deaths.append((at, (128 + signum) & 0xFF, signum))
        else:
            self.deaths.append((at, (code or 0) & 0xFF, 0))

    def resize(self, limit: int) -> None:
        if limit != self.deaths.maxlen:
            self.deaths = deque(self.deaths, maxlen=limit)

    def pack(self) -> bytes:
        """s6's `supervise/death_tally`: per death a TAI64N stamp, the exit code, the signal."""
        out = bytearray()
        for at, code, signum in self.deaths:
            seconds = int(at)
            nanos = min(int((at - seconds) * 1e9), 999_999_999)
            out += (TAI_OFFSET + seconds).to_bytes(8, "big") + nanos.to_bytes(4, "big")
            out += bytes((code & 0xFF, signum & 0xFF))
        return bytes(out)

    def write_for_s6(self, directory: str) -> None:
        """Replace `directory/supervise/death_tally` when `supervise/` exists; never raises."""
        supervise = os.path.join(directory, "supervise")
        if not os.path.isdir(supervise):
            return
        path = os.path.join(supervise, "death_tally")
        staging = path + ".new"
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, self.pack())
            finally:
                os.close(fd)
            os.rename(staging, path)
        except OSError:
            pass  # a read-only directory: s6-permafailon then sees no tally, as without s6


class StartFailures:
    """Counts failed starts in a row (supervisord's backoff counter)."""

    __slots__ = ("count", "policy")

    def __init__(self, policy: GiveUpPolicy) -> None:
        self.policy = policy
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def death(self, lived: float) -> str | None:
        """A death `lived` seconds after its start; the reason to give up, or None."""
        if lived >= self.policy.start_secs:
            self.count = 0
            return None
        self.count += 1
        retries = self.policy.start_retries
        if retries is None or self.count <= retries:
            return None
        return (
            f"died {self.count} times in a row within {self.policy.start_secs:g} s of starting"
            f" (start-retries {retries}): not restarted"
        )

    def timed_out_reason(self) -> str:
        return f"not ready within timeout-up ({self.policy.timeout_up_ms} ms): start failed"
