"""Build a box's image with the Docker engine: hermetic, labelled, tagged only when it succeeded."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from buildbox.build import labels as naming
from buildbox.build.bootstrap import bootstrap_base
from buildbox.build.builder import Builder, BuildRequest, ClassicBuilder
from buildbox.build.buildkit import BuildKitBuilder, buildx_version, docker_cli
from buildbox.build.context import assemble
from buildbox.build.emulation import check_emulation
from buildbox.build.engine import Engine
from buildbox.compat import require_compatible
from buildbox.define.boxes import Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, wanted_for
from buildbox.oci.documents import INDEX_TYPES, platform_entry
from buildbox.oci.refs import Reference, is_pinned
from buildbox.oci.registry import open_registry
from buildbox.settings import Settings
from buildbox.source import Revision


@dataclass(frozen=True)
class BuildResult:
    box: str
    platform: str
    image_id: str
    tags: tuple[str, ...]
    inputs_digest: str
    #: True when an image with the same inputs already existed and nothing was built.
    skipped: bool


def select_builder(engine: Engine, settings: Settings) -> Builder:
    """The builder ``buildbox.builder`` asks for; ``auto`` is BuildKit wherever buildx runs."""
    if settings.builder == "classic":
        return ClassicBuilder(engine)
    if settings.builder == "auto":
        cli = shutil.which("docker")
        if cli is None or buildx_version(cli, engine.where) is None:
            return ClassicBuilder(engine)
    elif buildx_version(docker_cli(), engine.where) is None:
        raise BuildboxError(
            "buildbox.builder is buildkit, but `docker buildx version` fails here: install "
            "buildx (Debian: apt-get install docker-buildx) or set buildbox.builder: classic"
        )
    return BuildKitBuilder(engine, settings.buildx_builder or None)


def platform_base(base: str, platform: str) -> str:
    """The base image for one platform: a multi-platform index resolved to that platform's image.

    Falls back to ``base`` itself when it is a single image or its registry cannot be asked (the
    engine may then still have it locally, or pull it).
    """
    if not is_pinned(base):
        return base
    try:
        reference = Reference.parse(base)
        with open_registry(reference, timeout=30) as registry:
            found = registry.get_manifest(reference.repository, reference.digest or "")
    except BuildboxError:
        return base
    if found is None or found[1] not in INDEX_TYPES:
        return base
    entry = platform_entry(found[0], platform)
    if entry is None:
        raise BuildboxError(f"the base image {base} has no {platform} image")
    return f"{reference.name}@{entry}"


def ensure_base(engine: Engine, base: str, platform: str, allow_floating: bool) -> str:
    """The base image reference to build ``platform`` from: local, or pulled now."""
    if not is_pinned(base) and not allow_floating:
        raise BuildboxError(
            f"base image {base!r} is not pinned by digest; pin it in box.yaml, or pass "
            "--allow-floating-base for a local experiment (such an image can never be released)"
        )
    chosen = platform_base(base, platform)
    if engine.image(chosen) is None:
        engine.pull(chosen, platform)
    return chosen


def build_box(
    project: Project,
    box: Box,
    platform: str,
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    builder: Builder | None = None,
    log: Callable[[str], None] = print,
    no_cache: bool = False,
    force: bool = False,
    allow_floating_base: bool = False,
    offline: bool = False,
    fresh_base: bool = False,
) -> BuildResult:
    """Build ``box`` for ``platform`` unless an image with the same inputs exists; tag it.

    ``fresh_base`` bootstraps a bootstrapped base again even when this engine has it.
    """
    box.platforms_for(platform)
    digest = inputs_digest(box, project.library, project.settings, platform)
    tags = naming.local_tags(project.settings.registry, box, platform, revision)
    # A floating base can change under the same name: never trust an earlier build of it.
    reuse = not (force or no_cache) and box.pinned
    existing = engine.find_image(naming.identity(box, digest)) if reuse else None
    if existing is None:
        check_emulation(platform)
        fetched = fetcher.fetch_all(wanted_for([box], project.library, platform), offline=offline)
        artifacts = {f.wanted.sha256: f.path for f in fetched}
        require_compatible(box, project.library, platform, artifacts, project.settings.cache_dir)
        base_digest = None
        if box.bootstrap is not None:
            base, base_digest = bootstrap_base(
                engine, box, platform, artifacts, revision.epoch, log, fresh=fresh_base
            )
        else:
            base = ensure_base(engine, box.base, platform, allow_floating_base)
        context = assemble(box, project.library, project.settings, platform, artifacts)
        labels = naming.labels(box, platform, digest, revision, base_digest)
        request = BuildRequest(context, base, box.network, labels, no_cache, revision.epoch, tags)
        chosen = builder or select_builder(engine, project.settings)
        if isinstance(chosen, ClassicBuilder) and "--mount=" in box.dockerfile.read_text():
            raise BuildboxError(
                f"buildboxes/{box.name}/Dockerfile uses RUN --mount (e.g. to install its locked "
                "packages), which only BuildKit builds: set buildbox.builder to auto or buildkit "
                "(with docker buildx installed)"
            )
        image_id = chosen.build(request, log)
    else:
        image_id = existing
    # Tags move only now, after a successful build: a failure leaves every tag where it was.
    for tag in tags:
        engine.tag(image_id, tag)
    return BuildResult(box.name, platform, image_id, tags, digest, skipped=existing is not None)
