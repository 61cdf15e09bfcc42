"""The build stage: a box's image built with the Docker engine (hermetic, labelled, tagged only
when it succeeded), or located when it was built before, as a :class:`Built` value that the
later stages (verify, prepare, describe) take without looking the image up again."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from buildbox.build import labels
from buildbox.build.bootstrap import bootstrap_base, require_built_on
from buildbox.build.builder import Builder, BuildRequest, ClassicBuilder
from buildbox.build.buildkit import BuildKitBuilder, buildx_version, docker_cli
from buildbox.build.context import assemble
from buildbox.build.emulation import check_emulation
from buildbox.build.engine import Engine, LocalImage
from buildbox.compat import require_compatible
from buildbox.define.boxes import Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, wanted_for
from buildbox.oci.documents import INDEX_TYPES, platform_entry
from buildbox.oci.refs import Reference, is_pinned
from buildbox.oci.registry import open_registry
from buildbox.oci.transport import GaveUpError
from buildbox.settings import Settings
from buildbox.source import Revision


@dataclass(frozen=True)
class Built:
    """One platform's image of a box, as the engine has it: what the later stages take."""

    box: str
    platform: str
    image: LocalImage
    #: The local names it has: the release name and the dev tag (``labels.local_tags``).
    tags: tuple[str, ...]
    #: What the box's inputs hash to for this platform, computed once per command ("" when the
    #: image's platform is not one of the box's: verify then says so).
    inputs_digest: str
    #: True when an image with the same inputs already existed and nothing was built.
    skipped: bool = False

    @property
    def image_id(self) -> str:
        return self.image.id

    @property
    def base_digest(self) -> str | None:
        """The digest of the base it was built on, as its label records it: the platform
        image's (read from the index the pin names, checked against it), or a bootstrapped
        base's content."""
        return self.image.labels.get(labels.LABEL_BASE_DIGEST)


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


def platform_base(base: str, platform: str, settings: Settings) -> str:
    """The base image for one platform: a multi-platform index resolved to that platform's image.

    The index is read by its pinned digest and refused unless it hashes to it, so the platform
    digest it names is the one the pin vouches for (the engine checks that image's own digest
    when it pulls it). Falls back to ``base`` itself when it is a single image or its registry
    cannot be reached (the engine may then still have it locally, or pull it and check the
    digest itself); a registry that answers with a refusal or other content is an error.
    """
    if not is_pinned(base):
        return base
    reference = Reference.parse(base)
    try:
        with open_registry(reference, settings) as registry:
            found = registry.get_manifest(reference.repository, reference.digest or "")
    except GaveUpError:  # unreachable (offline, say): the engine may have the image
        return base
    if found is None or found[1] not in INDEX_TYPES:
        return base
    entry = platform_entry(found[0], platform)
    if entry is None:
        raise BuildboxError(f"the base image {base} has no {platform} image")
    return f"{reference.name}@{entry}"


def ensure_base(
    engine: Engine, base: str, platform: str, allow_floating: bool, settings: Settings
) -> str:
    """The base image reference to build ``platform`` from: local, or pulled now."""
    if not is_pinned(base) and not allow_floating:
        raise BuildboxError(
            f"base image {base!r} is not pinned by digest; pin it in box.yaml, or pass "
            "--allow-floating-base for a local experiment (such an image can never be released)"
        )
    chosen = platform_base(base, platform, settings)
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
) -> Built:
    """Build ``box`` for ``platform`` unless an image with the same inputs exists; tag it.

    ``fresh_base`` bootstraps a bootstrapped base again even when this engine has it.
    """
    box.platforms_for(platform)
    digest = inputs_digest(box, project.library, project.settings, platform)
    tags = labels.local_tags(project.settings.registry, box, platform, revision)
    # A floating base can change under the same name: never trust an earlier build of it.
    reuse = not (force or no_cache) and box.pinned
    existing = engine.find_image(labels.identity(box, digest)) if reuse else None
    if existing is None:
        check_emulation(platform)
        fetched = fetcher.fetch_all(wanted_for([box], project.library, platform), offline=offline)
        artifacts = {f.wanted.sha256: f.path for f in fetched}
        require_compatible(box, project.library, platform, artifacts, project.settings.cache_dir)
        rootfs = None  # a bootstrapped base's root filesystem: the built image's lowest layer
        if box.bootstrap is not None:
            base, rootfs = bootstrap_base(
                engine, box, platform, artifacts, revision.epoch, log, fresh=fresh_base,
                cache_dir=project.settings.cache_dir,
            )  # fmt: skip
            base_digest: str | None = rootfs
        else:
            base = ensure_base(engine, box.base, platform, allow_floating_base, project.settings)
            # What is recorded is the image built on: the platform's, from the checked index.
            base_digest = Reference.parse(base, default_host=True).digest
        context = assemble(box, project.library, project.settings, platform, artifacts)
        image_labels = labels.labels(box, platform, digest, revision, base_digest)
        request = BuildRequest(
            context, base, box.network, image_labels, no_cache, revision.epoch, tags
        )
        chosen = builder or select_builder(engine, project.settings)
        if isinstance(chosen, ClassicBuilder) and "--mount=" in box.dockerfile.read_text():
            raise BuildboxError(
                f"buildboxes/{box.name}/Dockerfile uses RUN --mount (e.g. to install its locked "
                "packages), which only BuildKit builds: set buildbox.builder to auto or buildkit "
                "(with docker buildx installed)"
            )
        image_id = chosen.build(request, log)
        if rootfs is not None:
            require_built_on(engine, image_id, rootfs, box, platform)
    else:
        image_id = existing
    # Tags move only now, after a successful build: a failure leaves every tag where it was.
    for tag in tags:
        engine.tag(image_id, tag)
    image = engine.image(tags[0])
    if image is None:
        raise BuildboxError(f"the engine has no image {tags[0]} right after tagging it")
    return Built(box.name, platform, image, tags, digest, skipped=existing is not None)


def locate(
    engine: Engine,
    project: Project,
    box: Box,
    platform: str | None,
    revision: Revision,
    reference: str | None = None,
) -> Built:
    """The box's image built before: ``reference``, else its local release name for
    ``platform``. Its platform is the one the image says it is for (a named image may be for
    any); the inputs digest is the box's for that platform."""
    tags: tuple[str, ...] = (reference,) if reference else ()
    if reference is None:
        assert platform is not None  # a box's own image is named by its platform
        tags = labels.local_tags(project.settings.registry, box, platform, revision)
    image = engine.image(tags[0])
    if image is None:
        raise BuildboxError(
            f"no local image {tags[0]}; build it first: invoke build --box={box.name}"
        )
    found = image.labels.get(labels.LABEL_PLATFORM) or image.platform
    digest = (
        inputs_digest(box, project.library, project.settings, found)
        if found in box.platforms
        else ""
    )
    return Built(box.name, found, image, tags, digest)
