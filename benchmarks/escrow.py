"""Benchmark escrow: what keeping a release's inputs beside it costs, on a real box's inputs.

The inputs of a release of debian13 (every locked package of both platforms, the lock's Packages
indices, libbpf's source tarball) are fetched and verified into a cache first (not timed), then
escrowed to a fresh loopback registry as `invoke release` does (``release.escrow``):
- the first release: every input uploaded;
- a second release whose lock changes one package (``--package``; its other version is Debian
  12's, downloaded with `apt-get download`, which checks it against this machine's signed
  index): only that package's bytes are uploaded, every other blob is found by HEAD;
- the baseline, in the same run and to the same registry (another repository): `oras push` of
  the same files, an independent client uploading the same bytes as one artifact.
Run: python benchmarks/escrow.py [--box debian13] [--package make] [--cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from buildbox import output
from buildbox.define import project as project_stage
from buildbox.define.boxes import Box
from buildbox.digests import canonical_json, digest_of
from buildbox.fetch import Fetcher
from buildbox.oci.documents import EMPTY_JSON, OCI_EMPTY, OCI_MANIFEST, Descriptor
from buildbox.oci.inputs import Input
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.release.escrow import Escrowed, escrow_release, release_inputs, wanted
from buildbox.settings import from_config
from registry import Registry

REPO = Path(__file__).resolve().parent.parent


def subject(client: RegistryClient, repository: str, name: str) -> Descriptor:
    """A small manifest standing for a release's index (what an inputs manifest refers to)."""
    client.upload_blob(repository, digest_of(EMPTY_JSON), EMPTY_JSON)
    body = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Descriptor.of(OCI_EMPTY, EMPTY_JSON).as_dict(),
            "layers": [],
            "annotations": {"org.opencontainers.image.title": name},
        }
    )
    client.put_manifest(repository, digest_of(body), body, OCI_MANIFEST)
    return Descriptor.of(OCI_MANIFEST, body)


def changed_package(inputs: list[Input], package: str, scratch: Path) -> tuple[Input, Path]:
    """``package`` at another version: Debian 12's, as apt downloads (and verifies) it."""
    old = next(i for i in inputs if i.kind == "package" and i.name == package)
    subprocess.run(["apt-get", "download", "-q", package], cwd=scratch, check=True,
                   capture_output=True)  # fmt: skip
    [deb] = scratch.glob(f"{package}_*.deb")
    data = deb.read_bytes()
    version = deb.name.split("_")[1]
    if hashlib.sha256(data).hexdigest() == old.sha256:
        raise SystemExit(f"{package} is the same file on this machine; pick another --package")
    new = dataclasses.replace(
        old, sha256=hashlib.sha256(data).hexdigest(), size=len(data), version=version,
        url=f"apt-get download {package} (Debian 12)",
    )  # fmt: skip
    return new, deb


def timed_escrow(
    client: RegistryClient, box: Box, name: str, inputs: list[Input], paths: dict[str, Path]
) -> tuple[float, Escrowed]:
    """One release's escrow, as `invoke release` pushes it, timed (its subject pushed first)."""
    repository = f"bench/{box.name}"
    about = subject(client, repository, name)
    started = time.perf_counter()
    done = escrow_release(client, repository, about, box, inputs, paths, "2026-12-03T00:00:00Z")
    return time.perf_counter() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--box", default="debian13")
    parser.add_argument("--package", default="make")
    parser.add_argument("--cache", type=Path, default=None, help="download cache (default: the "
                        "project's buildbox.cache_dir)")  # fmt: skip
    args = parser.parse_args()
    settings = dataclasses.replace(from_config({}), root=REPO)
    if args.cache is not None:
        settings = dataclasses.replace(settings, cache_dir=args.cache)
    project = project_stage.load(settings, box=args.box)
    box = project.box(args.box)
    wanted_files = wanted(project, box)
    print(f"escrow benchmark: {args.box}, {len(wanted_files)} inputs; fetching (not timed)")
    with output.fetch_progress(sys.stderr, len(wanted_files)) as progress:
        fetched = Fetcher(settings, progress).fetch_all(wanted_files)
    paths = {f.wanted.sha256: f.path for f in fetched}
    inputs = release_inputs(project, box, paths)
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-escrow-"))
    registry = Registry(scratch / "registry").start()
    try:
        with RegistryClient(registry.host) as client:
            first_time, first = timed_escrow(client, box, "v1", inputs, paths)
            new, deb = changed_package(inputs, args.package, scratch)
            second_inputs = [new if i.name == args.package and i.kind == "package" else i
                             for i in inputs]  # fmt: skip
            second_paths = {**paths, new.sha256: deb}
            second_time, second = timed_escrow(client, box, "v2", second_inputs, second_paths)
        files = scratch / "files"
        files.mkdir()
        for each in inputs:
            (files / each.sha256).symlink_to(paths[each.sha256])
        started = time.perf_counter()
        subprocess.run(
            ["oras", "push", "--plain-http", "--disable-path-validation",
             f"{registry.host}/bench/oras:v1", *sorted(p.name for p in files.iterdir())],
            cwd=files, check=True, capture_output=True,
        )  # fmt: skip
        oras_time = time.perf_counter() - started
    finally:
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    size = output.size
    print(f"inputs: {first.inputs} files, {size(first.size)}")
    print(f"first release's escrow:  {first_time:6.2f} s, uploaded {first.uploaded} "
          f"({size(first.uploaded_size)})")  # fmt: skip
    print(
        f"second release's escrow: {second_time:6.2f} s, uploaded {second.uploaded} "
        f"({size(second.uploaded_size)}; {args.package} {new.version}: {size(new.size)})"
    )
    print(f"oras push of the same files (baseline): {oras_time:6.2f} s")
    print(f"first escrow / oras push:  {first_time / oras_time:.2f}x")
    print(f"second escrow / first:     {second_time / first_time:.3f}x")


if __name__ == "__main__":
    main()
