"""summary.json, typed (issue 11): the model (`Summary` and its sections), its checked decoder and
encoder, its JSON Schema, and (`loadgen.summary.build`) the one function that builds it."""

from loadgen.summary.io import (
    SummaryError,
    as_summary,
    decode,
    encode,
    load_summary,
    schema,
    schema_json,
    to_dict,
)
from loadgen.summary.model import SCHEMA_VERSION, SUPPORTED_VERSIONS, Summary

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Summary",
    "SummaryError",
    "as_summary",
    "decode",
    "encode",
    "load_summary",
    "schema",
    "schema_json",
    "to_dict",
]
