"""Writing s6-overlay v3 trees (`etc/s6-overlay/s6-rc.d/`) into a test Tree, shaped as real
images write them: oneshot `up` files naming a script by absolute path, longrun `run`
scripts, `dependencies.d/` and `contents.d/` entries, user bundles in `user-bundles.d/`."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Tree


class V3:
    """Helpers over one Tree; `log` is a file every script appends its events to."""

    def __init__(self, tree: Tree, profile: str = "etc/s6-overlay") -> None:
        self.tree = tree
        self.base = tree.root / profile
        self.rc = self.base / "s6-rc.d"
        self.rc.mkdir(parents=True, exist_ok=True)
        self.log = tree.base / "events.log"

    def _touch(self, path: Path, text: str = "", mode: int = 0o644) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def _deps(self, name: str, deps: tuple[str, ...] | list[str]) -> None:
        for dep in deps:
            self._touch(self.rc / name / "dependencies.d" / dep)

    def oneshot(self, name: str, body: str | None = None, deps: tuple[str, ...] = ("base",),
                down: str | None = None, up_text: str | None = None,
                files: dict[str, str] | None = None) -> Path:
        """A oneshot whose `up` names a shell script (the linuxserver.io way); the script
        appends `up NAME` to the event log, then runs `body`. `up_text` replaces the up file
        entirely (comment-only files, execline blocks)."""
        directory = self.rc / name
        self._touch(directory / "type", "oneshot\n")
        if up_text is None:
            script = self._touch(directory / "run",
                                 f"#!/bin/sh\necho \"up {name}\" >> {self.log}\n{body or ''}\n",
                                 0o755)
            up_text = f"{script}\n"
        self._touch(directory / "up", up_text)
        if down is not None:
            script = self._touch(directory / "finish-script",
                                 f"#!/bin/sh\necho \"down {name}\" >> {self.log}\n{down}\n", 0o755)
            self._touch(directory / "down", f"{script}\n")
        self._deps(name, deps)
        for filename, content in (files or {}).items():
            self._touch(directory / filename, content)
        return directory

    def longrun(self, name: str, run: str, deps: tuple[str, ...] = ("base",),
                files: dict[str, str] | None = None) -> Path:
        """A longrun whose run script appends `run NAME` to the event log, then runs `run`."""
        directory = self.rc / name
        self._touch(directory / "type", "longrun\n")
        self._touch(directory / "run",
                    f"#!/bin/sh\necho \"run {name}\" >> {self.log}\n{run}\n", 0o755)
        self._deps(name, deps)
        for filename, content in (files or {}).items():
            self._touch(directory / filename, content)
        return directory

    def bundle(self, name: str, contents: list[str]) -> None:
        self._touch(self.rc / name / "type", "bundle\n")
        for member in contents:
            self._touch(self.rc / name / "contents.d" / member)

    def user(self, *names: str, bundle: str = "user") -> None:
        """Enable names in the user (or user2) bundle, the 3.2.3.2+ way."""
        for name in names:
            self._touch(self.base / "user-bundles.d" / bundle / "contents.d" / name)

    def events(self) -> list[str]:
        try:
            return self.log.read_text().splitlines()
        except FileNotFoundError:
            return []
