"""The narrow core: everything the control side (rpc.py, handlers.py) may see and do.

The Container (stages.py) owns the boot and shutdown; the control side gets this facade
instead of the Container itself: the loop it runs on, the supervisor, a way to ask for a
shutdown, whether one is under way, and a few read-only facts for `hello`. Nothing else of
stage 2/3 is reachable from a request.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Loop
    from .rc_run import RcRunner
    from .reaper import ExitStatus

    # argv, pid while it runs, how it ended, epoch seconds it started (then ended)
    CmdFacts = tuple[list[str], int | None, ExitStatus | None, float | None]
    from .supervisor import Supervisor


class Core:
    """The facade handed to the control server (rpc.py calls it `container`)."""

    __slots__ = ("_cmd", "_info", "_rc", "_request", "_rescan", "_stopping", "loop", "socket_gid",
                 "socket_path", "supervisor")

    def __init__(
        self,
        loop: Loop,
        supervisor: Supervisor,
        socket_path: str,
        socket_gid: int | None,
        request_shutdown: Callable[[int | None, str], bool],
        stopping: Callable[[], bool],
        info: Callable[[], dict[str, object]],
        rc: Callable[[], RcRunner | None] = lambda: None,
        cmd: Callable[[], CmdFacts] = lambda: ([], None, None, None),
        rescan: Callable[[str], None] = lambda origin: None,
    ) -> None:
        self.loop = loop
        self.supervisor = supervisor
        self.socket_path = socket_path
        self.socket_gid = socket_gid
        self._request = request_shutdown
        self._stopping = stopping
        self._info = info
        self._rc = rc
        self._cmd = cmd
        self._rescan = rescan

    @property
    def stopping(self) -> bool:
        """True once stage 3 has begun: requests that would start something are refused."""
        return self._stopping()

    def request_shutdown(self, exit_code: int | None = None, reason: str = "requested") -> bool:
        """Start stage 3 (once); an explicit exit code overrides every other source."""
        return self._request(exit_code, reason)

    @property
    def rc(self) -> RcRunner | None:
        """The dependency layer (rc_run.py) once stage 2 has read the trees, else None."""
        return self._rc()

    def cmd(self) -> CmdFacts:
        """The CMD: argv ([] when none), pid while it runs, how it ended, when it last changed."""
        return self._cmd()

    def rescan(self, origin: str) -> None:
        """Rescan services.d as SIGHUP does (deferred until services.d has started)."""
        self._rescan(origin)

    def info(self) -> dict[str, object]:
        """Facts for `hello`: pid1, orphans_reaped, cmd_pid."""
        return self._info()
