"""Benchmark SBOMs: generate, validate and diff SBOMs of N components; seconds per 1,000.

Run: python benchmarks/sbom.py [--components 2000]
The components are OS packages (what dominates a real box); the box is a throw-away test project.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from buildbox.define import project
from buildbox.sbom import cyclonedx as sbom
from buildbox.sbom import diff as sbom_diff
from buildbox.sbom.packages import OsPackage
from buildbox.source import Revision
from buildbox.verify import Report
from projects import BASE, make_project, settings_for

T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--components", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = make_project(
            Path(scratch),
            boxes={
                "big": {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": []}
            },
        )
        loaded = project.load(settings_for(root))
        box = loaded.box("big")
    facts = sbom.ImageFacts("sha256:" + "1" * 64, "linux/amd64", "sha256:" + "2" * 64)
    report = Report("image", "linux/amd64", (), ())
    revision = Revision("0" * 40, dirty=False, epoch=1_700_000_000)

    def packages(release: str) -> list[OsPackage]:
        return [
            OsPackage(
                "deb",
                "debian",
                f"package-{i:05d}",
                f"1.{i}-{release if i % 10 == 0 else 1}",
                "amd64",
            )
            for i in range(args.components)
        ]

    def generate(release: str) -> str:
        bom = sbom.build_bom(loaded, box, facts, report, packages(release), revision)
        # render validates too; validation is also timed on its own below
        return sbom.render(bom, "linux/amd64").text

    # The first SBOM of a process also imports jsonschema and builds the validator (once).
    _, cold_seconds = timed(lambda: generate("0"))
    old, generate_seconds = timed(lambda: generate("1"))
    new = generate("2")
    _, validate_seconds = timed(lambda: sbom.validate(old))
    changes, diff_seconds = timed(lambda: sbom_diff.diff(json.loads(old), json.loads(new)))
    assert len(changes) == args.components // 10

    per = 1000 / args.components
    size = len(old) / 1e6
    print(f"sbom benchmark: {args.components} components, CycloneDX 1.6 JSON ({size:.1f} MB)")
    for what, seconds in (
        ("first generate in a process (cold)", cold_seconds),
        ("generate (build, serialize, validate)", generate_seconds),
        ("validate alone (schema)", validate_seconds),
        (f"diff ({len(changes)} versions changed)", diff_seconds),
    ):
        print(f"{what:40s} {seconds:6.2f} s = {seconds * per:.3f} s per 1,000 components")


if __name__ == "__main__":
    main()
