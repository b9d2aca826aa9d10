"""Finding the bundled mapping, schemas and demo shop, from a checkout or an install."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent
_BUNDLED = _HERE / "_bundled"


def _first(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def schemas_dir() -> Path:
    return _first(_CHECKOUT / "schemas", _BUNDLED / "schemas")


def mappings_dir() -> Path:
    return _first(_CHECKOUT / "mappings", _BUNDLED / "mappings")


def demo_fixtures_dir() -> Path:
    return _first(_CHECKOUT / "tests" / "fixtures" / "ccvshop", _BUNDLED / "fixtures" / "ccvshop")


def mapping_schema_path() -> Path:
    return schemas_dir() / "mapping.schema.json"


def resolve_mapping(path: str | Path) -> Path:
    """The mapping file as given, or else a bundled one of the same name.

    ``mapper validate mappings/ccvshop_asperion.yaml`` then works from a checkout and,
    after ``pip install .``, from any directory.
    """
    p = Path(path)
    if p.exists():
        return p
    if p.parent.name in ("mappings", "") and (mappings_dir() / p.name).exists():
        return mappings_dir() / p.name
    return p


def resolve_relative(mapping_file: Path, relative: str, fallback_dir: Path) -> Path:
    """A path in a mapping, relative to the mapping file; bundled copy as fallback."""
    p = (mapping_file.parent / relative).resolve()
    if p.exists():
        return p
    q = fallback_dir / Path(relative).name
    return q if q.exists() else p
