"""The tasks that run things: doctor, registry, and main (the main job)."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import output
from buildbox.tasks._common import fails_cleanly, load, print_report, release_version, settings


@task(
    positional=["box"],
    help={"box": "The box to release, e.g. debian13 (built from Debian packages only)."},
)
@fails_cleanly
def main(ctx: Context, box: str) -> None:
    """The main job: build, verify, SBOM and release a box; print the checks, SBOM and ref.

    With no registry configured (buildbox.registry empty), the release goes to a registry the
    toolkit runs on 127.0.0.1 (data under the cache directory; `invoke registry --stop`).
    """
    from buildbox import local_registry
    from buildbox.release.record import RECORD_FILE

    project, chosen = load(ctx, box)
    host = local_registry.ensure_running(project.settings)
    if host:
        print(f"main: releasing to the local registry {host} (buildbox.registry is empty)")
    done = release_version(project, chosen)
    for report in done.reports:
        print(f"verify {report.image} ({report.platform}):")
        print_report(report)
    print(f"{'released' if done.new else 'already released'}: {chosen.name} {chosen.release_tag}")
    if project.settings.signing_key:
        print("signed with cosign, with SBOM and provenance attestations (invoke verify-release)")
    for platform, facts in sorted(done.release.platforms.items()):
        print(f"SBOM ({platform}): {facts.sbom_path} (CycloneDX 1.6; recorded in {RECORD_FILE})")
    print(f"ref: {done.release.reference}")


@task(
    help={
        "stop": "Stop the local registry (its data stays under the cache directory).",
        "reset": "Stop it and delete its data (everything released to it is gone).",
    }
)
@fails_cleanly
def registry(ctx: Context, stop: bool = False, reset: bool = False) -> None:
    """Show, stop or reset the registry the toolkit runs on loopback when none is configured."""
    from buildbox import local_registry

    found = settings(ctx)
    if not found.local_registry:
        print(f"buildbox.registry is {found.registry}: no local registry is used")
    elif reset:
        local_registry.reset(found)
        print(f"local registry reset: {local_registry.directory(found)} is gone")
    elif stop:
        stopped = local_registry.stop(found)
        print("local registry stopped" if stopped else "no local registry was running")
    else:
        host = local_registry.ensure_running(found)
        print(f"local registry: {host}, data in {local_registry.directory(found)}")


@task
@fails_cleanly
def doctor(ctx: Context) -> None:
    """Show what the Docker engine offers: version, image store, buildx, builders, emulation."""
    from buildbox.build.doctor import examine
    from buildbox.build.engine import Engine

    with Engine.connect() as engine:
        found = examine(engine, settings(ctx))
    print(output.table(["", "WHAT", "FOUND"], [["ok" if f.ok else "!!", f.topic, f.detail]
                                              for f in found]))  # fmt: skip
    missing = sum(not f.ok for f in found)
    if missing:
        raise Exit(f"doctor: {missing} problem(s): see the lines marked !!", 1)
