"""The registry the toolkit runs itself: only the process this cache directory started is it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from projects import make_project, run_cli
from registry import Registry, free_port

pytestmark = pytest.mark.integration


def local_registry_project(root: Path, port: int) -> Path:
    make_project(root)
    (root / "invoke.yaml").write_text(
        f'buildbox:\n  registry: ""\n  local_registry_port: {port}\n  cache_dir: {root / "cache"}\n'
    )
    return root


def test_another_registry_on_the_port_is_refused_not_reused(
    registry: Registry, tmp_path: Path
) -> None:
    # Another checkout's local registry (or anyone's) answers on the configured port: releasing
    # to it would mix this checkout's releases with its data.
    root = local_registry_project(tmp_path / "project", registry.port)
    refused = run_cli(root, "registry")
    assert refused.returncode == 1
    assert (
        f"{registry.host} answers as a registry, but not the one the toolkit started for this "
        f"cache directory ({root / 'cache' / 'registry'})"
    ) in refused.stderr
    assert "buildbox.local_registry_port" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr


def test_its_own_registry_is_reused_stopped_and_a_recycled_pid_left_alone(
    tmp_path: Path,
) -> None:
    root = local_registry_project(tmp_path / "project", free_port())
    started = run_cli(root, "registry")
    assert started.returncode == 0, started.stderr
    reused = run_cli(root, "registry")
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout == started.stdout
    assert run_cli(root, "registry", "--stop").stdout == "local registry stopped\n"

    # The recorded pid now names an unrelated process (pids are recycled): not signalled.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (root / "cache" / "registry" / "pid").write_text(str(bystander.pid))
        stopped = run_cli(root, "registry", "--stop")
        assert stopped.stdout == "no local registry was running\n"
        assert bystander.poll() is None, "the unrelated process still runs"
    finally:
        bystander.kill()
        bystander.wait()
