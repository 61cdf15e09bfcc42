"""`invoke check`: every box and the library, and the release record's version-bump rule."""

from __future__ import annotations

from buildbox.compat import check_box
from buildbox.define import project as project_stage
from buildbox.define.boxes import Box
from buildbox.define.lock import (
    DEFAULT_KEYRING,
    LOCK_FILE,
    PROOF_DIR,
    keyring_files,
    proof_problems,
)
from buildbox.define.project import Project
from buildbox.errors import BuildboxError, Problem
from buildbox.fetch import Fetcher, wanted_for, wanted_indices
from buildbox.release import record
from buildbox.settings import Settings


def check_project(
    settings: Settings, fetcher: Fetcher, *, offline: bool = False
) -> tuple[Project, list[Problem]]:
    """Every problem of every box and of the library, every package lock its signed proof does
    not vouch for, and every released version whose inputs changed without a version bump.
    ``offline``: a Packages index not in the verified cache is not fetched (a problem)."""
    project, problems = project_stage.check(settings)
    found = {*problems, *record.unbumped_versions(project)}
    for box in project.boxes:
        found.update(lock_proof_problems(box, project, fetcher, offline=offline))
    return project, sorted(found, key=project_stage.reading_order)


def lock_proof_problems(
    box: Box, project: Project, fetcher: Fetcher, *, offline: bool = False
) -> list[Problem]:
    """The box's package lock re-derived from its proof (``define.lock.proof_problems``) with
    the keyring the project pins; the Packages indices come through the verified cache, fetched
    by hash when absent. An index that cannot be had fails the check (nothing is skipped)."""
    lock = box.lock
    if lock is None:
        return []
    settings = project.settings
    shown = settings.shown(box.directory / LOCK_FILE)
    hint = f"run `invoke lock {box.name}`"
    if box.bootstrap is not None:
        named = box.bootstrap.keyring or DEFAULT_KEYRING
        if lock.keyring != named:
            message = f"verified with {lock.keyring or 'no keyring'}, not {named}; {hint}"
            return [Problem(shown, None, "keyring", message)]
    try:
        keyring = keyring_files(settings.root, lock.keyring)
    except ValueError as error:
        return [Problem(shown, None, "keyring", f"{error}; {hint}")]
    indices, found = {}, []
    for want in wanted_indices(box.name, lock):
        try:
            [fetched] = fetcher.fetch_all([want], offline=offline)
        except BuildboxError as error:
            reason = str(error).splitlines()[-1].strip()  # names the index and its URL
            if offline:
                reason = (
                    f"the {want.label} sha256:{want.sha256} is not in the cache and --offline "
                    "fetches nothing; run `invoke check` where the archive is reachable"
                )
            field = f"platforms.{want.platform}.sources"
            found.append(Problem(shown, None, field, f"not verified: {reason}"))
            continue
        indices[want.sha256] = fetched.path
    if found:
        return found
    proof_dir = box.directory / PROOF_DIR
    proofs = {n: (proof_dir / n).read_bytes() for n in lock.proofs if (proof_dir / n).is_file()}
    return proof_problems(lock, shown, proofs, keyring, indices, box.name)


def binary_problems(project: Project, fetcher: Fetcher) -> list[Problem]:
    """`invoke check --deep`: fetch every box's artifacts (verified) and check that each box's
    base can run them on each of its platforms (buildbox.compat). An artifact that cannot be
    fetched is a problem of its own; the others are still checked."""
    wanted = wanted_for(project.boxes, project.library, packages=False)
    settings = project.settings
    problems: list[Problem] = []
    try:
        fetched = fetcher.fetch_all(wanted)
    except BuildboxError:  # some are unreachable: take them one by one, to check the rest
        fetched = []
        for each in wanted:
            try:
                fetched += fetcher.fetch_all([each])
            except BuildboxError as error:
                reason = str(error).splitlines()[-1].strip()  # names the artifact and URL
                where = settings.shown(settings.components_file)
                problems.append(Problem(where, None, "", f"not checked: {reason}"))
    artifacts = {f.wanted.sha256: f.path for f in fetched}
    return problems + [
        Problem(settings.shown(box.directory / "box.yaml"), None, "", line)
        for box in project.boxes
        for platform in box.platforms
        for line in check_box(box, project.library, platform, artifacts, settings.cache_dir)
    ]
