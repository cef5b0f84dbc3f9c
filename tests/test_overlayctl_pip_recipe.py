"""The README's pip recipe, run as written, in a Debian minbase root (`make test-dist`).

There is no Docker engine here, so the Dockerfile under "With pip" in README.md is read and
carried out the way `docker build` would: FROM is a Debian minbase root of the host's release
(Debian 12 on this project's machines): test_dist's nginx root, minbase plus nginx-light and no
Python, which tests/distroot.py builds once and caches, so this costs no second root; each RUN is
`/bin/sh -c` in that root, as PID 1 of fresh PID and mount namespaces with `PATH` only; COPY
puts this checkout at /opt/overlayd-src and one service at /etc/services.d. Then ENTRYPOINT
["/init"] boots with a CMD that drives the services through the links the recipe made, and
the CMD's exit code must be the container's. The README is the input: edit its recipe and this
test runs the new one (an instruction it does not know fails it).

apt and pip reach the network as a build would. One adjustment to this machine, not to the
recipe: when the host verifies TLS with its own CA bundle ($PIP_CERT / $SSL_CERT_FILE, as
behind an intercepting proxy), pip in the root is given that bundle too.

Runs only under `make test-dist` (it sets $OVERLAYD_DIST), the run that builds Debian roots
and may use the network; about 30 s with the root cached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.distroot import ENV_PATH, ChrootBoot, Unavailable, archive, boot_argv, debian_root
from tests.harness import REPO

pytestmark = [
    needs_root,
    pytest.mark.skipif(archive() is None, reason="OVERLAYD_DIST unset: run `make test-dist`"),
]

#: The CMD: what an operator does first, through the links (/init, /usr/local/bin/overlayctl,
#: with-contenv), then an exit code of its own.
CMD = (
    "overlayctl wait web && overlayctl status && overlayctl restart web"
    " && overlayctl stop web && overlayctl start web && overlayctl version"
    ' && with-contenv sh -c "echo with-contenv: ok" && overlayctl --help | head -3; exit 7'
)


def recipe() -> list[tuple[str, str]]:
    """The Dockerfile of README's "With pip" section: (instruction, arguments), in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### With pip") :]
    block = re.search(r"```dockerfile\n(.*?)```", section, re.S)
    assert block, "README's pip section has no dockerfile block"
    joined = re.sub(r"\\\n", " ", block.group(1))  # line continuations
    steps = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            steps.append((instruction, args.strip()))
    return steps


def _copy_checkout(dest: Path) -> None:
    """COPY overlayd-src/: the files git tracks in this checkout, as they are on disk."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _run_env(root: Path) -> list[str]:
    env = ["PATH=" + ENV_PATH, "HOME=/root"]
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        bundle = os.environ.get(name)
        if bundle and Path(bundle).is_file():
            shutil.copyfile(bundle, root / "etc/host-ca.crt")
            env.append("PIP_CERT=/etc/host-ca.crt")
            break
    return env


def _run(root: Path, env: list[str], command: str) -> str:
    """RUN command: /bin/sh -c in the root, as PID 1 of new PID and mount namespaces."""
    argv = ["unshare", "--pid", "--fork", "--mount",
            *boot_argv(root, "/usr/bin/env", "-i", *env, "/bin/sh", "-c", command)]  # fmt: skip
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        env={"PATH": ENV_PATH},
    )  # fmt: skip
    assert done.returncode == 0, f"RUN {command}\nexited {done.returncode}:\n{done.stdout}" \
        f"\n{done.stderr[-3000:]}"  # fmt: skip
    return done.stdout + done.stderr


def test_readme_pip_recipe_as_written_installs_links_and_boots_as_pid1(tmp_path: Path) -> None:
    steps = recipe()
    assert [i for i, _ in steps[:1]] == ["FROM"] and steps[0][1] == "debian:12"
    try:
        root = debian_root(tmp_path, "minbase-nginx")  # Debian minbase, no Python
    except Unavailable as exc:
        pytest.skip(f"cannot build a Debian root here: {exc}")
    assert not list((root / "usr/bin").glob("python*")), "the root must start without Python"
    env = _run_env(root)
    entrypoint = None
    for instruction, args in steps[1:]:
        if instruction == "RUN":
            _run(root, env, args)
        elif instruction == "COPY" and args == "overlayd-src/ /opt/overlayd-src/":
            _copy_checkout(root / "opt/overlayd-src")
        elif instruction == "COPY" and args == "rootfs/ /":
            run = root / "etc/services.d/web/run"
            run.parent.mkdir(parents=True)
            run.write_text("#!/bin/sh\nexec sleep 1000\n")
            run.chmod(0o755)
        elif instruction == "ENTRYPOINT":
            entrypoint = args
        elif instruction != "CMD":  # the README's CMD is an example; this test gives its own
            pytest.fail(f"the recipe has an instruction this test does not know: {instruction}")
    assert entrypoint == '["/init"]'
    # The venv at its fixed path, and the links the recipe promises.
    assert (root / "opt/overlayd/bin/python").exists()
    for link, target in [("init", "/opt/overlayd/bin/overlayd"),
                         ("usr/local/bin/overlayctl", "/opt/overlayd/bin/overlayctl"),
                         ("usr/bin/with-contenv", "/opt/overlayd/bin/with-contenv")]:  # fmt: skip
        assert os.readlink(root / link) == target
    with ChrootBoot(root, ["/bin/sh", "-c", CMD]) as box:
        code = box.wait()
    output = box.output
    assert code == 7, output
    assert re.search(r"^web +up ", output, re.M), output
    assert re.search(r"web: restarted \(pid \d+ → \d+\)", output), output
    assert re.search(r"web: stopped \(pid \d+", output), output
    assert re.search(r"web: started, up \(pid \d+\)", output), output
    assert re.search(r"^overlayd \S+ \(protocol \d+\)$", output, re.M), output
    assert "with-contenv: ok" in output and "Usage: overlayctl" in output, output
    assert "Traceback" not in output
