"""The cosign CLI: the one home of every cosign call (sign, attest, verify, by digest).

Signatures and attestations are stored the way cosign stores them: as ``sha256-<hex>.sig`` and
``.att`` tags in the image's repository. That is what ``cosign verify``, Kyverno and the Sigstore
policy controller read by default, and it works on registries without the OCI 1.1 referrers API
(cosign's referrers mode is still experimental in 2.5).

A context manager: the registry credentials the toolkit has for the host (``credentials_for``:
BUILDBOX_REGISTRY_USERNAME/PASSWORD or the local registry's generated ones for the publishing
registry, else the Docker config's entry) are handed to cosign in a private Docker config
directory holding that host's entry only, removed on exit; without any, cosign reads the user's
Docker config (and its credential helpers) as docker does. No secret is ever on a command line,
and cosign's output is scrubbed of every secret before it reaches a message.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from buildbox.errors import BuildboxError
from buildbox.oci.credentials import credentials_for
from buildbox.oci.transport import Clock
from buildbox.settings import Settings

#: The variable cosign reads a private key's password from.
PASSWORD_VARIABLE = "COSIGN_PASSWORD"  # noqa: S105 (a variable's name, not a secret)
KEYLESS = "sigstore"
#: Seconds a cosign call may take when no command's registry clock bounds it.
_TIMEOUT = 300


class CosignError(BuildboxError):
    """cosign refused or failed; the message carries its reason, without secrets."""


@dataclass(frozen=True)
class Trust:
    """What a signature must be made with: a public key, or a keyless identity."""

    public_key: str = ""
    #: Keyless: the certificate identity (the signing workflow's URL) and its OIDC issuer.
    identity: str = ""
    issuer: str = "https://token.actions.githubusercontent.com"
    transparency_log: bool = True

    def arguments(self) -> list[str]:
        if self.public_key:
            found = ["--key", self.public_key]
        elif self.identity:
            found = ["--certificate-identity", self.identity]
            found += ["--certificate-oidc-issuer", self.issuer]
        else:
            raise BuildboxError(
                "no key to verify signatures with: set buildbox.signing_public_key (a cosign "
                "public key file or env://VARIABLE) or buildbox.signing_identity (keyless)"
            )
        return found if self.transparency_log else [*found, "--insecure-ignore-tlog=true"]


class Cosign:
    """cosign for one registry host; use as ``with Cosign(host, settings, http=...) as cosign:``.

    With the ``clock`` of the command's registry transport, each call runs on that clock and
    within what is left of it: cosign talks to the same registry, so a registry that hangs while
    a release is signed ends it within ``registry_time_limit`` too."""

    def __init__(
        self, host: str, settings: Settings, *, http: bool = False, clock: Clock | None = None
    ) -> None:
        found = shutil.which("cosign")
        if found is None:
            raise BuildboxError(
                "cosign is not installed; it signs and verifies releases (Debian 13 and newer: "
                "apt-get install cosign; elsewhere: https://docs.sigstore.dev/cosign/installation)"
            )
        self.binary = found
        self.host = host
        self.settings = settings
        #: Plain-HTTP registries (loopback, buildbox.allow_http_hosts) need cosign's consent.
        self.http = http
        self.clock = clock
        self._config: tempfile.TemporaryDirectory[str] | None = None
        self._secrets: list[str] = []

    def __enter__(self) -> Self:
        env_password = os.environ.get(PASSWORD_VARIABLE)
        if env_password:
            self._secrets.append(env_password)
        found = credentials_for(self.host, self.settings)
        if found is not None:
            self._secrets.append(found.password)
            self._config = tempfile.TemporaryDirectory(prefix="buildbox-cosign-")
            token = base64.b64encode(f"{found.username}:{found.password}".encode()).decode()
            path = Path(self._config.name) / "config.json"
            path.touch(mode=0o600)
            path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._config is not None:
            self._config.cleanup()
            self._config = None

    def _run(self, what: str, *arguments: str) -> str:
        command = [self.binary, *arguments]
        if self.http:
            command.append("--allow-http-registry=true")
        environment = dict(os.environ)
        if self._config is not None:
            environment["DOCKER_CONFIG"] = self._config.name
        if self.clock is None:
            result = self._call(what, command, environment, _TIMEOUT)
        else:
            with self.clock.running():
                result = self._call(what, command, environment, min(_TIMEOUT, self.clock.left()))
        if result.returncode != 0:
            raise CosignError(f"cosign could not {what}: {self._reason(result.stderr)}")
        return result.stdout

    def _call(
        self, what: str, command: list[str], environment: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        if timeout <= 0:
            raise CosignError(f"cosign could not {what}: {self._out_of_time()}")
        try:
            return subprocess.run(
                command, capture_output=True, text=True, env=environment, timeout=timeout,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            if self.clock is None:
                raise CosignError(f"cosign did not finish {what} within {_TIMEOUT} s") from None
            raise CosignError(f"cosign did not finish {what}: {self._out_of_time()}") from None

    def _out_of_time(self) -> str:
        assert self.clock is not None
        return (
            f"no answer within buildbox.registry_time_limit ({self.clock.limit:g} s for all the "
            f"registry requests of this command); rerun when {self.host} recovers, or raise "
            "buildbox.registry_time_limit"
        )

    def _reason(self, stderr: str) -> str:
        """cosign's error, its last meaningful line, with every secret replaced."""
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error:")] or lines[-1:]
        reason = errors[-1].removeprefix("Error:").strip() if errors else "no output"
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason

    def sign(self, image: str, key: str, transparency_log: bool) -> None:
        """Sign ``image`` (``host/repo@sha256:...``) with ``key``, or keyless (``sigstore``)."""
        self._run(f"sign {image}", "sign", "--yes", *_key(key, transparency_log), image)

    def attest(
        self, image: str, predicate: bytes, kind: str, key: str, transparency_log: bool
    ) -> None:
        """Attach a signed in-toto statement about ``image`` with ``predicate`` of ``kind``
        (cosign's type names: cyclonedx, slsaprovenance1, ...)."""
        with tempfile.NamedTemporaryFile(suffix=".json") as file:
            file.write(predicate)
            file.flush()
            self._run(
                f"attest {kind} for {image}", "attest", "--yes", "--type", kind,
                "--predicate", file.name, *_key(key, transparency_log), image,
            )  # fmt: skip

    def verify(self, image: str, trust: Trust) -> None:
        """Raise unless ``image`` has a signature ``trust`` accepts."""
        self._run(f"verify the signature of {image}", "verify", *trust.arguments(), image)

    def attestations(self, image: str, kind: str, trust: Trust) -> list[dict[str, Any]]:
        """The in-toto statements of ``kind`` about ``image`` whose signatures ``trust`` accepts."""
        output = self._run(
            f"verify the {kind} attestation of {image}",
            "verify-attestation", "--type", kind, *trust.arguments(), image,
        )  # fmt: skip
        return list(_statements(output))


def _key(key: str, transparency_log: bool) -> list[str]:
    found = [] if key == KEYLESS else ["--key", key]
    return found if transparency_log else [*found, "--tlog-upload=false"]


def _statements(output: str) -> Iterator[dict[str, Any]]:
    """The statements inside the DSSE envelopes cosign prints, one JSON object per line."""
    for line in output.splitlines():
        if not line.strip().startswith("{"):
            continue
        envelope = json.loads(line)
        yield json.loads(base64.b64decode(envelope["payload"]))
