"""A real CNCF distribution registry (Debian's docker-registry) on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import requests
from docker import DockerClient
from docker.models.images import Image

from buildbox.oci.documents import MANIFEST_ACCEPT

REGISTRY_BINARY = "docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Tls:
    """The registry's certificate and key, and the CA bundle that verifies them."""

    certificate: Path
    key: Path
    ca_bundle: Path


@dataclass(frozen=True)
class TokenAuth:
    """The registry's ``auth: token`` configuration: who issues tokens and what signs them."""

    realm: str
    service: str
    issuer: str
    root_certificates: Path


@dataclass
class Registry:
    """One registry process with its own storage; ``start``/``stop`` may be called repeatedly.

    Plain http without auth by default; htpasswd with ``username``/``password``; https with
    ``tls``; bearer tokens from a token service with ``token_auth``."""

    workdir: Path
    username: str | None = None
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tls: Tls | None = None
    token_auth: TokenAuth | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def verify(self) -> str | bool:
        """What requests checks the registry's certificate with."""
        return str(self.tls.ca_bundle) if self.tls else True

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
        ]
        if self.tls:
            lines += [
                "  tls:",
                f"    certificate: {self.tls.certificate}",
                f"    key: {self.tls.key}",
            ]
        if self.token_auth:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_auth.realm}",
                f"    service: {self.token_auth.service}",
                f"    issuer: {self.token_auth.issuer}",
                f"    rootcertbundle: {self.token_auth.root_certificates}",
            ]
        if self.auth:
            htpasswd = self.workdir / "htpasswd"
            subprocess.run(
                ["htpasswd", "-Bbc", str(htpasswd), self.username or "", self.password or ""],
                check=True,
                capture_output=True,
            )
            lines += ["auth:", "  htpasswd:", "    realm: buildbox-test", f"    path: {htpasswd}"]
        config = self.workdir / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> Registry:
        if shutil.which(REGISTRY_BINARY) is None:
            raise FileNotFoundError(
                f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)"
            )
        config = self._write_config()
        log = (self.workdir / "registry.log").open("ab")
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self.process.returncode}: "
                    f"{(self.workdir / 'registry.log').read_text()[-2000:]}"
                )
            try:
                answer = requests.get(f"{self.url}/v2/", timeout=1, verify=self.verify)
                if answer.status_code in (200, 401):
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"docker-registry did not answer on {self.url} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def id_of(image: Image) -> str:
    """The image's id. The stubs type ``Model.id`` as ``str | None`` (docker-py reads it with
    ``attrs.get``), but an image the engine returned always has one."""
    return cast(str, image.id)


def push(
    client: DockerClient, repository: str, tag: str, auth: dict[str, str] | None = None
) -> str:
    """Push ``repository:tag`` through the engine; the digest the registry's tag now names.

    docker-py reports push failures as error chunks inside a successful stream, so read them all.
    The legacy image store reports the pushed digest in the stream; the containerd store does
    not, so the registry is asked (what a consumer pins is what the registry serves).
    """
    for chunk in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
        if "error" in chunk or "errorDetail" in chunk:
            raise RuntimeError(f"push of {repository}:{tag} failed: {chunk.get('error', chunk)}")
    host, _, name = repository.partition("/")
    answer = requests.head(
        f"http://{host}/v2/{name}/manifests/{tag}",
        headers={"Accept": MANIFEST_ACCEPT},
        auth=(auth["username"], auth["password"]) if auth else None,
        timeout=30,
    )
    digest = answer.headers.get("Docker-Content-Digest")
    if answer.status_code != 200 or not digest:
        raise RuntimeError(f"push of {repository}:{tag}: the registry has no such tag")
    return digest
