"""Validate STAC Items with pystac without network: the core schemas pystac ships, the extension schemas
vendored in tests/data/stac_schemas (see its README), and a failure if anything else would be fetched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pystac
import pystac.validation
from pystac.validation.stac_validator import JsonSchemaSTACValidator

SCHEMA_DIR = Path(__file__).parent / "data" / "stac_schemas"


class NoNetworkStacIO(pystac.StacIO):
    """A StacIO that refuses every read: validation must find every schema in the cache."""

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        raise AssertionError(f"the validator tried to fetch {source}; vendor that schema in {SCHEMA_DIR}")

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")


def offline_validator() -> JsonSchemaSTACValidator:
    """pystac's JSON-schema validator with the vendored extension schemas in its cache (needs jsonschema)."""
    validator = JsonSchemaSTACValidator()
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        validator.schema_cache[schema["$id"].rstrip("#")] = schema
    return validator


def validate_offline(item: dict | pystac.Item, monkeypatch) -> list[str]:
    """Validate one Item, as written (a dict) or a pystac.Item, against the core schema and every extension
    it declares; returns the schema URIs used. Raises pystac's STACValidationError when it is not valid."""
    monkeypatch.setattr(pystac.StacIO, "default", classmethod(lambda cls: NoNetworkStacIO()))
    stac_dict = item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else item
    return pystac.validation.validate_dict(stac_dict, validator=offline_validator())
