"""``sbom.validation``, the fast CycloneDX 1.6 validator, gives the reference validator's answers.

The reference is cyclonedx-python-lib's ``JsonStrictValidator(V1_6)`` (the test extra installs its
json-validation extra: jsonschema with rfc3987_syntax, rfc3986_validator and rfc3339_validator).
The documents are seeded random mutations of an SBOM made by ``build_bom`` and ``render``; the
reference labels each one valid or invalid, and the fast validator must say the same.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc3987_syntax
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft7Validator
from rfc3339_validator import validate_rfc3339
from rfc3986_validator import validate_rfc3986

from buildbox.define import project
from buildbox.sbom import cyclonedx as sbom
from buildbox.sbom import validation
from buildbox.sbom.packages import OsPackage
from buildbox.source import Revision
from buildbox.verify import ProbeResult, Report
from projects import component, make_project, settings_for

Document = dict[str, Any]
Mutation = Callable[[random.Random, Document], None]

DOCUMENTS = 240
#: Each verdict must be at least this common, so that agreement is not agreement on one answer.
AT_LEAST = 80


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Document:
    """A real SBOM: a library component (with a download URL) and deb, rpm and apk packages."""
    # A short URL: the reference checks IRIs with an Earley parser, ~0.7 ms per character.
    tool = component(url="https://e/t")
    root = make_project(tmp_path_factory.mktemp("sbom"), components={"tool": tool})
    loaded = project.load(settings_for(root))
    probe = ProbeResult("tool", "/opt/tool/bin/tool --version", "tool 1.0", "tool 1.0\n", 0)
    packages = [
        OsPackage("deb", "debian", "libc6", "2.36-9", "amd64", "LGPL-2.1+", release="debian-12"),
        OsPackage("rpm", "centos", "gcc", "4.8.5-44.el7", "x86_64", "GPLv3+", epoch="1"),
        OsPackage("apk", "alpine", "musl", "1.2.4-r2", "x86_64", "MIT"),
    ]
    bom = sbom.build_bom(
        loaded,
        loaded.box("demo"),
        sbom.ImageFacts("sha256:" + "1" * 64, "linux/amd64", "sha256:" + "2" * 64),
        Report("image", "linux/amd64", (), (probe,)),
        packages,
        Revision("0" * 40, dirty=False, epoch=1_700_000_000),
    )
    document: Document = json.loads(sbom.render(bom, "linux/amd64").text)
    return document


# --- generated strings -----------------------------------------------------------------------

#: What an IRI may have: unreserved, sub-delims, percent escapes, ucschar.
_IRI_GOOD = [*"aZ09-._~!$&'()*+,;=:@/", "%41", "%7e", "é", "中"]
#: Characters at the edges of the ranges RFC 3987 allows (iprivate only in a query), and astral.
_IRI_EDGES = [
    *("\ue000", "\uf8ff", "\uf900", "\ufdd0", "\uffef", "\ufff0", "\u00a0", "\u009f"),
    "\U00010000",
]
_IRI_PATH = [_IRI_GOOD, _IRI_GOOD, _IRI_GOOD, _IRI_EDGES]
#: What an IRI may not have, or only in one place.
_IRI_BAD = [*'% "<\\^`{|}[]?#\n', "%g0"]
_SCHEMES = ["https:", "http:", "git+ssh:", "x.y-z:", "", ""]
_AUTHORITIES = [
    *("", "//e.org", "//u:p@e.org:8080", "//127.0.0.1", "//256.0.0.1", "//[::1]"),
    *("//[1:2:3:4:5:6:7:8]", "//[1::3:4:5:6:7:8]", "//[1:2:3:4:5:6::]", "//[v7.a:b]"),
    *("//é.org", "//e.org:", "//"),
]


def _near_miss(rng: random.Random, text: str, alphabets: list[list[str]]) -> str:
    """``text``, one time in two with one or two characters of ``alphabets`` put in anywhere."""
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 2)):
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(rng.choice(alphabets)) + text[at:]
    return text


def _iri(rng: random.Random) -> str:
    """An IRI reference of a common shape, or a near miss."""
    authority = rng.choice(_AUTHORITIES)
    path = "".join(rng.choice(rng.choice(_IRI_PATH)) for _ in range(rng.randint(0, 3)))
    if authority or rng.random() < 0.5:
        path = "/" + path
    query = rng.choice(["", "", "?", "?a=1&b", "?" + rng.choice(_IRI_EDGES)])
    fragment = rng.choice(["", "", "#", "#top", "#/x?y"])
    iri = rng.choice(_SCHEMES) + authority + path + query + fragment
    tail = rng.choice([""] * 8 + ["\n", " "])
    return _near_miss(rng, iri, [_IRI_GOOD, _IRI_EDGES, _IRI_BAD]) + tail


def _date_time(rng: random.Random) -> str:
    """An RFC 3339 date-time, or a near miss: a field out of range, or of the wrong form."""
    fields = [
        rng.choice(["2024", "1970", "2023", "2000", "1900", "0001", "9999"]),
        rng.choice(["01", "02", "04", "12"]),
        rng.choice(["01", "28", "29", "30", "31"]),  # 29 to 31: not in every month
        rng.choice(["T", "t"]),
        rng.choice(["00", "13", "23"]),
        rng.choice(["00", "59"]),
        rng.choice(["00", "59"]),
        rng.choice(["", "", ".5", ".123456789"]),
        rng.choice(["Z", "z", "+00:00", "-23:59"]),
        "",
    ]
    wrong = [
        ["0000", "24", "20245"],
        ["00", "13", "1"],
        ["00", "32", "1"],
        [" ", "TT", ""],
        ["24", "1"],
        ["60"],
        ["60", "61"],
        ["."],
        ["+24:00", "+01:60", "+0100", "", "+01"],
        ["\n", " ", "\nZ"],
    ]
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 2)):
            field = rng.randrange(len(fields))
            fields[field] = rng.choice(wrong[field])
    year, month, day, t, hour, minute, second, fraction, zone, tail = fields
    return f"{year}-{month}-{day}{t}{hour}:{minute}:{second}{fraction}{zone}{tail}"


def _text(rng: random.Random) -> str:
    return "".join(rng.choice("aZ9 -_.:/@é中\t") for _ in range(rng.randint(0, 8)))


def _not_a_string(rng: random.Random) -> Any:
    return rng.choice([0, 1, 1.5, -1, True, False, None, [], ["x"], {}, {"x": "y"}])


# --- mutations: each changes one thing in a copy of the base SBOM ------------------------------


def _some_component(rng: random.Random, document: Document) -> Document:
    """One of the components build_bom made (or a copy of one), the image's included."""
    found = [document["metadata"]["component"], *document["components"]]
    return rng.choice([c for c in found if "properties" in c])


def _library_component(document: Document) -> Document:
    return next(c for c in document["components"] if c.get("bom-ref") == "component:tool@1.0")


def set_version(rng: random.Random, document: Document) -> None:
    _some_component(rng, document)["version"] = _text(rng)


def set_purl(rng: random.Random, document: Document) -> None:
    """The schema types purl as a plain string: a malformed purl is still valid CycloneDX."""
    purls = ["pkg:deb/debian/x@1?arch=amd64", "pkg:", "not a purl", "", "pkg:oci/x@sha256:zz"]
    _some_component(rng, document)["purl"] = rng.choice([*purls, _text(rng)])


def set_timestamp(rng: random.Random, document: Document) -> None:
    document["metadata"]["timestamp"] = _date_time(rng)


def set_url(rng: random.Random, document: Document) -> None:
    _library_component(document)["externalReferences"][0]["url"] = _iri(rng)


def add_reference(rng: random.Random, document: Document) -> None:
    kind = rng.choice(["website", "vcs", "distribution", "Website", "download", ""])
    reference = {"type": kind, "url": rng.choice(["https://e.org", "//e.org/x", "e x"])}
    _some_component(rng, document).setdefault("externalReferences", []).append(reference)


def add_property(rng: random.Random, document: Document) -> None:
    value: Any = rng.choice([_text(rng), _text(rng), 1, None])
    _some_component(rng, document).setdefault("properties", []).append(
        {"name": _text(rng), "value": value}
    )


def set_type(rng: random.Random, document: Document) -> None:
    valid = ["application", "library", "container", "operating-system", "firmware", "data"]
    invalid = ["Library", "app", "", "os", "library "]
    _some_component(rng, document)["type"] = rng.choice([*valid, *valid, *invalid])


def add_hash(rng: random.Random, document: Document) -> None:
    alg = rng.choice(["SHA-256", "SHA-512", "MD5", "BLAKE3", "SHA3-256", "SHA256", "sha-256"])
    length = rng.choice([32, 40, 64, 64, 96, 128, 63, 65, 0])
    content = "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(length))
    if rng.random() < 0.15:
        content = content[:-1] + "g"
    _some_component(rng, document).setdefault("hashes", []).append({"alg": alg, "content": content})


def set_license(rng: random.Random, document: Document) -> None:
    choice = rng.randrange(4)
    licenses: list[Any]
    if choice == 0:
        identifier = rng.choice(["MIT", "Apache-2.0", "GPL-2.0-only", "mit", "NotALicense", ""])
        licenses = [{"license": {"id": identifier}}]
    elif choice == 1:
        licenses = [{"license": {"name": _text(rng)}}]
    elif choice == 2:
        licenses = [{"expression": "MIT OR " + _text(rng)}]
    else:  # an expression must be alone
        licenses = [{"expression": "MIT"}, {"expression": "Apache-2.0"}]
    _some_component(rng, document)["licenses"] = licenses


def add_twin(rng: random.Random, document: Document) -> None:
    """A near copy of a component: unique, unless the change is one JSON equality ignores."""
    twin = copy.deepcopy(rng.choice(document["components"]))
    field, value = rng.choice(
        [("name", _text(rng)), ("bom-ref", "twin"), ("version", "2"), ("name", twin["name"])]
    )
    twin[field] = value
    document["components"].append(twin)


def add_number_twins(rng: random.Random, document: Document) -> None:
    """Two items of a uniqueItems array differing only in a number: 1 and 1.0 are the same,
    1 and true are not (and true is not an integer)."""
    one, two = rng.choice(
        [(1, 1.0), (1, 2), (1, True), (0, False), (2.0, 2), (3, 3), (2, 2.5), (1, "1")]
    )
    where = rng.randrange(3)
    if where == 0:
        document["components"] += [
            {
                "type": "cryptographic-asset",
                "name": "aes",
                "cryptoProperties": {
                    "assetType": "algorithm",
                    "algorithmProperties": {"nistQuantumSecurityLevel": level},
                },
            }
            for level in (one, two)
        ]
    elif where == 1:
        document["vulnerabilities"] = [{"id": "CVE-1", "cwes": [cwe]} for cwe in (one, two)]
    else:
        document["vulnerabilities"] = [
            {"id": "CVE-1", "ratings": [{"score": score}]} for score in (one, two)
        ]


def reorder(rng: random.Random, document: Document) -> None:
    """Order matters to no rule: shuffled arrays and keys leave validity as it was."""
    rng.shuffle(document["components"])
    rng.shuffle(document["dependencies"])
    items = list(document.items())
    rng.shuffle(items)
    document.clear()
    document.update(items)


def set_serial_number(rng: random.Random, document: Document) -> None:
    serial = uuid.UUID(int=rng.getrandbits(128))
    document["serialNumber"] = rng.choice(
        [serial.urn, serial.urn, serial.urn.upper(), str(serial), serial.urn + "\n"]
    )


def set_bom_version(rng: random.Random, document: Document) -> None:
    document["version"] = rng.choice([1, 2, 1.0, 7.0, 0, -1, 1.5, "1", True, None])


def set_modified(rng: random.Random, document: Document) -> None:
    _some_component(rng, document)["modified"] = rng.choice([True, False, "true", 1, 0])


def delete_required(rng: random.Random, document: Document) -> None:
    target, key = rng.choice(
        [
            (document, "bomFormat"),
            (document, "specVersion"),
            (_some_component(rng, document), "name"),
            (_some_component(rng, document), "type"),
            (rng.choice(document["dependencies"]), "ref"),
            (_library_component(document)["hashes"][0], "alg"),
            (_library_component(document)["hashes"][0], "content"),
            (_library_component(document)["externalReferences"][0], "url"),
            (_library_component(document)["externalReferences"][0], "type"),
            (rng.choice(_some_component(rng, document)["properties"]), "name"),
            (rng.choice(_some_component(rng, document)["properties"]), "value"),  # optional
        ]
    )
    del target[key]


def set_wrong_type(rng: random.Random, document: Document) -> None:
    target, key = rng.choice(
        [
            (_some_component(rng, document), "name"),
            (_some_component(rng, document), "version"),
            (_some_component(rng, document), "bom-ref"),
            (_some_component(rng, document), "properties"),
            (rng.choice(document["dependencies"]), "ref"),
            (_library_component(document)["hashes"][0], "content"),
            (document, "components"),
            (document, "metadata"),
            (document, "specVersion"),
        ]
    )
    target[key] = _not_a_string(rng)


def set_bad_enum(rng: random.Random, document: Document) -> None:
    target, key, value = rng.choice(
        [
            (document, "bomFormat", rng.choice(["cyclonedx", "SPDX", "CycloneDX "])),
            (document, "specVersion", rng.choice(["1.7", "1.60", "1.5", 1.6])),
            (_library_component(document)["externalReferences"][0], "type", "download"),
            (_library_component(document)["hashes"][0], "alg", rng.choice(["SHA256", "sha-256"])),
        ]
    )
    target[key] = value


def duplicate_item(rng: random.Random, document: Document) -> None:
    """An item repeated in a uniqueItems array, perhaps with its keys in another order."""
    image = document["metadata"]["component"]["bom-ref"]
    image_dependency = next(d for d in document["dependencies"] if d["ref"] == image)
    array = rng.choice(
        [document["components"], document["dependencies"], image_dependency["dependsOn"]]
    )
    item = copy.deepcopy(rng.choice(array))
    if isinstance(item, dict) and rng.random() < 0.5:
        item = dict(reversed(item.items()))
    array.insert(rng.randrange(len(array) + 1), item)


def add_extra_key(rng: random.Random, document: Document) -> None:
    """additionalProperties is false nearly everywhere in the strict schema."""
    target = rng.choice(
        [
            document,
            document["metadata"],
            _some_component(rng, document),
            rng.choice(document["dependencies"]),
            _library_component(document)["hashes"][0],
            _library_component(document)["externalReferences"][0],
            rng.choice(_some_component(rng, document)["properties"]),
        ]
    )
    target[rng.choice(["x", "Name", "bomref", "$schema", "comment"])] = rng.choice(["1", 1, True])


KEEPING: list[Mutation] = [
    set_version,
    set_purl,
    set_timestamp,
    set_url,
    add_reference,
    add_property,
    set_type,
    add_hash,
    set_license,
    add_twin,
    add_number_twins,
    reorder,
    set_serial_number,
    set_bom_version,
    set_modified,
]
BREAKING: list[Mutation] = [
    delete_required,
    set_wrong_type,
    set_bad_enum,
    duplicate_item,
    add_extra_key,
    set_timestamp,
    set_url,
    add_number_twins,
]


def _documents(base: Document) -> Iterator[tuple[list[str], str]]:
    """Mutated copies of ``base``, as JSON text, with the names of their mutations: the last
    mutation is, one time in four, of those that mostly break a document; any before it keep the
    document's shape, so that every mutation finds what it changes."""
    rng = random.Random(25)
    for number in range(DOCUMENTS):
        document = copy.deepcopy(base)
        mutations = [rng.choice(KEEPING) for _ in range(rng.choice([0, 0, 1]))]
        mutations.append(rng.choice(BREAKING if number % 4 == 0 else KEEPING))
        for mutation in mutations:
            mutation(rng, document)
        yield [m.__name__ for m in mutations], json.dumps(document, indent=rng.choice([None, 2]))


def test_fast_and_reference_validators_agree_on_generated_sboms(base: Document) -> None:
    reference = JsonStrictValidator(SchemaVersion.V1_6)
    verdicts = {True: 0, False: 0}
    disagreements: list[str] = []
    first = ""
    for mutations, text in _documents(base):
        expected = reference.validate_str(text)
        found = validation.problems(text)
        verdicts[expected is None] += 1
        if (expected is None) != (not found):
            said = "valid" if expected is None else f"{expected.data.json_path}: invalid"
            disagreements.append(f"{mutations}: reference: {said}; fast: {found or 'valid'}")
            if len(disagreements) == 1:
                first = text
    assert not disagreements, "\n".join([*disagreements, "the first document:", first])
    assert verdicts[True] >= AT_LEAST, verdicts
    assert verdicts[False] >= AT_LEAST, verdicts


def test_the_base_sbom_and_a_broken_one_are_told_apart(base: Document) -> None:
    """The generated cases start from a valid document, and a problem is named by its path."""
    assert validation.problems(json.dumps(base)) == []
    broken = copy.deepcopy(base)
    broken["components"][0]["type"] = "app"
    [problem] = validation.problems(json.dumps(broken))
    assert problem.startswith("$.components[0].type: 'app' is not one of")


# --- the parts that replace jsonschema's -----------------------------------------------------


def test_the_formats_checked_are_every_format_the_schemas_use() -> None:
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("format"), str):
                used.add(node["format"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for schema in Path(validation._schema_dir()).glob("*.schema.json"):
        if not schema.name.startswith("bom-") or schema.name == "bom-1.6.SNAPSHOT.schema.json":
            walk(json.loads(schema.read_text(encoding="utf-8")))
    assert used == set(validation._FORMATS)


def _agree(strings: list[Any], library: list[bool], fast: Callable[[Any], bool]) -> None:
    """``fast`` gives the library's answer on every string, and both answers are common."""
    wrong = [(s, v) for s, v in zip(strings, library, strict=True) if fast(s) != v]
    assert not wrong, f"(string, the library's answer): {wrong}"
    assert len(strings) // 10 <= sum(library) <= len(strings) - len(strings) // 10


def test_iri_reference_regex_agrees_with_rfc3987_syntax() -> None:
    rng = random.Random(3987)
    strings = [_iri(rng) for _ in range(200)]  # the library takes ~0.7 ms per character
    library = [rfc3987_syntax.is_valid_syntax("iri_reference", s) for s in strings]
    _agree(strings, library, validation._is_iri_reference)


def test_uri_regex_agrees_with_rfc3986_validator() -> None:
    rng = random.Random(3986)
    strings = [_iri(rng) for _ in range(1000)]
    _agree(strings, [bool(validate_rfc3986(s, rule="URI")) for s in strings], validation._is_uri)


def test_date_time_agrees_with_rfc3339_validator() -> None:
    """As jsonschema checks it: rfc3339_validator on the upper-cased string."""
    rng = random.Random(3339)
    strings = [_date_time(rng) for _ in range(1000)]
    library = [validate_rfc3339(s.upper()) for s in strings]
    _agree(strings, library, validation._is_date_time)


#: Values JSON equality may or may not tell apart: 1 == 1.0 but not true, 0 == 0.0 but not false.
_LOOKALIKES: list[list[Any]] = [[1, 1.0, True], [0, 0.0, False], ["1", "", None]]


def test_unique_items_has_jsonschemas_equality() -> None:
    """Arrays of a value and a lookalike of it (at any depth, keys in another order)."""
    rng = random.Random(1)

    def value(depth: int) -> Any:
        kind = rng.randrange(3 if depth else 1)
        if kind == 1:
            return [value(depth - 1) for _ in range(rng.randint(0, 2))]
        if kind == 2:
            return {k: value(depth - 1) for k in rng.sample("abc", rng.randint(0, 3))}
        return rng.choice(rng.choice(_LOOKALIKES))

    def lookalike(of: Any) -> Any:
        if isinstance(of, list):
            return [lookalike(item) for item in of]
        if isinstance(of, dict):
            items = [(key, lookalike(item)) for key, item in of.items()]
            rng.shuffle(items)
            return dict(items)
        return rng.choice(next(group for group in _LOOKALIKES if of in group))

    arrays = []
    for _ in range(500):
        one = value(2)
        array = [one, lookalike(one), *(value(2) for _ in range(rng.randint(0, 2)))]
        rng.shuffle(array)
        arrays.append(array)
    reference = Draft7Validator({"uniqueItems": True})
    _agree(arrays, [reference.is_valid(array) for array in arrays], validation._all_unique)
