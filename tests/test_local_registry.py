"""The registry the toolkit runs itself: only the process this cache directory started is it,
and only the toolkit (with the credentials it generated) reads and writes it; nothing deletes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from buildbox import local_registry
from buildbox.digests import digest_of
from buildbox.oci.cosign import Cosign, Trust
from buildbox.oci.credentials import credentials_for
from buildbox.oci.documents import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.oci.registry import open_registry
from buildbox.settings import Settings, from_config
from conftest import missing
from projects import make_project, run_cli
from publishing import PASSWORD, key_pair
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


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """The toolkit's own registry, started as the tasks start it: (settings, its host)."""
    if shutil.which(local_registry.BINARY) is None:
        missing("docker-registry is not installed (apt-get install docker-registry)")
    settings = from_config(
        {"root": str(tmp_path), "registry": "", "local_registry_port": free_port(),
         "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    host = local_registry.ensure_running(settings)
    assert host is not None
    yield settings, host
    local_registry.stop(settings)


def a_manifest(registry: RegistryClient, repository: str, layer: bytes) -> bytes:
    """Upload a config and one layer; the manifest naming them (not yet pushed)."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    for blob in (config, layer):
        registry.upload_blob(repository, digest_of(blob), blob)
    descriptor = {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)}
    layers = [{"mediaType": OCI_LAYER_GZIP, "digest": digest_of(layer), "size": len(layer)}]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor}
    return json.dumps({**manifest, "layers": layers}).encode()


def test_only_the_toolkit_writes_its_registry_and_nothing_deletes(
    running: tuple[Settings, str],
) -> None:
    settings, host = running
    with open_registry(host, settings) as registry:
        manifest = a_manifest(registry, "buildbox/box", b"the release")
        registry.put_manifest("buildbox/box", "v1", manifest, OCI_MANIFEST)
        other = a_manifest(registry, "buildbox/box", b"someone else's")
    released = digest_of(manifest)
    url = f"http://{host}/v2/buildbox/box"
    for auth in (None, ("nobody", "nobody")):
        headers = {"Content-Type": OCI_MANIFEST}
        overwrite = requests.put(
            f"{url}/manifests/v1", other, headers=headers, auth=auth, timeout=10
        )
        assert overwrite.status_code == 401, f"{auth}: overwriting v1 answered {overwrite}"
        upload = requests.post(f"{url}/blobs/uploads/", auth=auth, timeout=10)
        assert upload.status_code == 401, f"{auth}: starting an upload answered {upload}"
        deleted = requests.delete(f"{url}/manifests/{released}", auth=auth, timeout=10)
        assert deleted.status_code == 401, f"{auth}: deleting v1 answered {deleted}"
    owner = credentials_for(host, settings)
    assert owner is not None
    deleted = requests.delete(
        f"{url}/manifests/{released}", auth=(owner.username, owner.password), timeout=10
    )
    assert deleted.status_code == 405, "deletes are off, for the owner too"
    with open_registry(host, settings) as registry:
        assert registry.manifest_digest("buildbox/box", "v1") == released

    where = settings.local_registry_dir
    for secret in (where / "htpasswd", settings.local_registry_config / "config.json"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    assert owner.password not in (where / "config.yml").read_text()
    assert credentials_for(host, from_config({"root": "/", "registry": f"{host}/x"})) is None, (
        "the generated credentials are the local registry's, not any registry's on that host"
    )


def test_cosign_signs_and_verifies_in_the_toolkits_registry(
    running: tuple[Settings, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    settings, host = running
    private, public = key_pair(tmp_path / "keys")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    with open_registry(host, settings) as registry:
        manifest = a_manifest(registry, "buildbox/box", b"signed")
        registry.put_manifest("buildbox/box", "v1", manifest, OCI_MANIFEST)
    image = f"{host}/buildbox/box@{digest_of(manifest)}"
    with Cosign(host, settings, http=True) as cosign:
        cosign.sign(image, str(private), transparency_log=False)
        cosign.verify(image, Trust(str(public), transparency_log=False))


def test_a_registry_an_older_toolkit_started_open_is_restarted_closed(tmp_path: Path) -> None:
    if shutil.which(local_registry.BINARY) is None:
        missing("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    settings = from_config(
        {"root": str(tmp_path), "registry": "", "local_registry_port": port,
         "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
    where = settings.local_registry_dir
    (where / "data").mkdir(parents=True)
    (where / "config.yml").write_text(
        "version: 0.1\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {where / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    older = subprocess.Popen(
        [local_registry.BINARY, "serve", str(where / "config.yml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        (where / "pid").write_text(str(older.pid))
        for _ in range(150):
            if local_registry.status(f"127.0.0.1:{port}") == 200:
                break
            time.sleep(0.1)
        host = local_registry.ensure_running(settings)
        assert host == f"127.0.0.1:{port}"
        assert local_registry.status(host) == 401, "it asks for credentials now"
        assert older.wait(timeout=10) is not None, "the open one was stopped"
    finally:
        local_registry.stop(settings)
        older.kill()
        older.wait()
