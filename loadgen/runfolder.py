"""A run folder, read safely and recovered when the run did not finish.

- `read_run_json` / `read_summary`: the only readers of run.json and summary.json for `verify`,
  `report` and `gate`. Each returns checked data (summary.json: the typed `Summary`) or raises `RunFolderError` (a ValueError) whose
  message names the file and what is wrong with it (missing, empty, not UTF-8, not JSON or cut
  short, or JSON of the wrong shape), for the CLI to print as one line (exit 2).
- `rebuilt_fields`: what `loadgen verify` adds to a summary it rebuilds because the run never
  wrote summary.json (killed, crashed, out of disk): the run's target and mesh profile from its
  folder, `status: partial`, and `recovered` naming what only the live run knew (null, never 0).
- `keep_previous`: the summary a verify replaces is kept and never overwritten:
  summary.previous.json is the first one (the run's own), later ones summary.previous.2.json, ...
- `new_dirs` / `discard_empty`: a run that fails before writing anything (a failed preflight)
  leaves no empty run folder behind.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from itertools import count
from pathlib import Path
from typing import Any

from loadgen.analysis.reconcile import Expectation
from loadgen.emitter import read_reference_log, summarize_reference_log
from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.hops import Hop
from loadgen.mesh.profile import PROFILE_FILE, MeshProfile, ProfileError, SpanShape
from loadgen.mesh.tracer import TracerFamily
from loadgen.summary.io import SummaryError, decode, show_value
from loadgen.summary.model import Summary

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
PREVIOUS_JSON = "summary.previous.json"
RUN_JSON_MAX_BYTES = 16 * 1024 * 1024  # a few KB in practice
SUMMARY_MAX_BYTES = 1024 * 1024 * 1024  # a day-long run's per-second windows are tens of MB

REBUILT_REASON = (
    "rebuilt by loadgen verify from the run folder: the run ended without writing summary.json "
    "(killed, crashed or out of disk)"
)


class RunFolderError(ValueError):
    """run.json or summary.json cannot be used; the message names the file and what is wrong."""


# --- reading JSON files -------------------------------------------------------------------------


def _load_json_object(path: Path, max_bytes: int) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise RunFolderError(f"{path} is missing") from exc
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise RunFolderError(f"{path} is {size:,} bytes, more than the {max_bytes:,} this file can be")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise RunFolderError(f"{path} is empty (cut off while it was being written?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "a binary or corrupted file"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # an error at the very end, or a string still open there: the file was cut short
        cut = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        raise RunFolderError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            + ("; it ends too early: cut off while it was being written?" if cut else "")
        ) from exc
    except (ValueError, RecursionError) as exc:  # a number too long to convert, nesting too deep
        raise RunFolderError(f"{path} is not a loadgen file: {exc or type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} holds a JSON {_kind(data)}, not the object a loadgen {path.name} is")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


class _Check:
    """Type checks of one file's fields; the first failure raises RunFolderError naming the file
    and the dotted path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, want: str, got: Any) -> RunFolderError:
        return RunFolderError(f"{self.path}: `{where}` must be {want}, got {show_value(got)}")

    def obj(self, where: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object", value)
        return value

    def field(self, obj: Mapping[str, Any], where: str, key: str) -> Any:
        if key not in obj:
            raise RunFolderError(f"{self.path}: `{f'{where}.' if where else ''}{key}` is missing")
        return obj[key]

    def count(self, where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where, "a whole number >= 0", value)
        return value

    def number(self, where: str, value: Any, *, null: bool = False, low: float | None = None,
               high: float | None = None) -> float | None:  # fmt: skip
        if value is None and null:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" in [{low:g}, {high:g}]" if low is not None and high is not None else ""
            raise self.fail(where, f"a finite number{bounds}" + (" or null" if null else ""), value)
        return float(value)

    def text(self, where: str, value: Any, *, null: bool = False) -> str | None:
        if value is None and null:
            return None
        if not isinstance(value, str):
            raise self.fail(where, "a string" + (" or null" if null else ""), value)
        return value

    def texts(self, where: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "a list of strings", value)
        return value


# --- run.json -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunMeta:
    """run.json, checked: what `loadgen verify` needs to read a run back and re-reconcile it."""

    run_id: str
    kind: str  # embedded | external
    target: dict[str, Any]
    backend_spec: str
    expect: Expectation
    run_id_tag: str
    min_collection: float
    search_service: str | None
    hops: tuple[Hop, ...] | None
    gaps: dict[str, str]
    max_error_rate: float | None  # None: run.json predates it
    expected_spans: int | None  # the run's --expected-spans (options), when it had one
    doc: dict[str, Any]  # the whole file, its checked fields safe to read


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_percent(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _is_tracer(value: Any) -> bool:
    return value in {t.value for t in TracerFamily}


# ExpectationContext's fields: flags are booleans, the tracer a family's name, the rest
# percentages (or null)
_CONTEXT_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    f.name: (
        (_is_bool, "true or false")
        if isinstance(f.default, bool)
        else (_is_tracer, "zipkin or opentelemetry")
        if isinstance(f.default, TracerFamily)
        else (_is_percent, "a number or null")
    )
    for f in fields(ExpectationContext)
}


def read_run_json(run_dir: Path) -> RunMeta:
    """run.json of a run folder, checked; RunFolderError says what is wrong with it."""
    path = run_dir / RUN_JSON
    if not os.path.lexists(path):
        raise RunFolderError(f"{run_dir} is not a loadgen run folder: it has no {RUN_JSON}")
    doc = _load_json_object(path, RUN_JSON_MAX_BYTES)
    c = _Check(path)
    run_id = c.text("run_id", c.field(doc, "", "run_id")) or ""
    if not run_id.strip():
        raise c.fail("run_id", "a run id", run_id)
    target = c.obj("target", c.field(doc, "", "target"))
    kind = c.text("target.kind", c.field(target, "target", "kind")) or ""
    if kind not in ("embedded", "external"):
        raise c.fail("target.kind", '"embedded" or "external"', kind)
    for key in ("gateway", "host", "collector", "backend", "backend_spec", "reader"):
        c.text(f"target.{key}", target.get(key), null=True)
    exp = c.obj("expectation", c.field(doc, "", "expectation"))
    spans = exp.get("spans_per_trace")
    spans = 0 if spans is None else c.count("expectation.spans_per_trace", spans)
    services = c.texts("expectation.services", exp.get("services") or [])
    configured = c.number("expectation.configured_percent", exp.get("configured_percent"),
                          null=True, low=0.0, high=100.0)  # fmt: skip
    shape = None
    if exp.get("shape") is not None:
        try:
            shape = SpanShape.from_json(exp["shape"])
        except ProfileError as exc:
            raise RunFolderError(f"{path}: `expectation.shape`: {exc}") from exc
    context = None
    if exp.get("context") is not None:
        raw_ctx = c.obj("expectation.context", exp["context"])
        for key, value in raw_ctx.items():
            if key not in _CONTEXT_TYPES:
                raise RunFolderError(f"{path}: `expectation.context.{key}` is not a known field")
            ok, want = _CONTEXT_TYPES[key]
            if not ok(value):
                raise c.fail(f"expectation.context.{key}", want, value)
        context = ExpectationContext(**raw_ctx)
    min_collection = c.number(
        "expectation.min_collection", exp.get("min_collection", 0.99), low=0.0, high=1.0
    )
    hops: tuple[Hop, ...] | None = None
    if exp.get("hops") is not None:
        raw_hops = exp["hops"]
        if not isinstance(raw_hops, list) or not all(
            isinstance(h, list) and len(h) == 2 and isinstance(h[0], str)
            and isinstance(h[1], int) and not isinstance(h[1], bool) and h[1] >= 0
            for h in raw_hops
        ):  # fmt: skip
            raise c.fail("expectation.hops", "a list of [service, spans]", raw_hops)
        hops = tuple(Hop(h[0], h[1]) for h in raw_hops) or None
    gaps = exp.get("gaps") or {}
    if not isinstance(gaps, dict) or not all(isinstance(v, str) for v in gaps.values()):
        raise c.fail("expectation.gaps", "an object of {verdict: reason}", gaps)
    options = doc.get("options")
    options = c.obj("options", options) if options is not None else {}
    expected_spans = options.get("expected_spans")
    if not (isinstance(expected_spans, int) and not isinstance(expected_spans, bool) and expected_spans > 0):
        expected_spans = None
    return RunMeta(
        run_id=run_id,
        kind=kind,
        target=target,
        backend_spec=str(target.get("backend_spec") or ""),
        expect=Expectation(spans, tuple(services), configured, context=context, shape=shape),
        run_id_tag=c.text("expectation.run_id_tag", exp.get("run_id_tag") or "") or "",
        min_collection=float(min_collection if min_collection is not None else 0.99),
        search_service=c.text("expectation.search_service", exp.get("search_service"), null=True),
        hops=hops,
        gaps={str(k): v for k, v in gaps.items()},
        max_error_rate=c.number(
            "expectation.max_error_rate", exp.get("max_error_rate"), null=True, low=0.0, high=1.0
        ),
        expected_spans=expected_spans,
        doc=doc,
    )


def run_tracer(run_dir: Path) -> TracerFamily | None:
    """The tracer a run read each request's sampled fact with (run.json's expectation context:
    --tracer, else the probe's; zipkin for a run.json from before the tracer). None when run.json
    is missing or unusable."""
    try:
        return read_run_json(run_dir).expect.mode_context().tracer
    except RunFolderError:
        return None


# --- summary.json -------------------------------------------------------------------------------


def read_summary(path: Path) -> Summary:
    """A summary.json, decoded into the typed model (`loadgen.summary`: the fields every report,
    comparison and gate reads, summary.schema.json); RunFolderError names the file and the first
    field that is wrong (or a schema version this loadgen does not read), and how to rebuild it."""
    if path.name == SUMMARY_JSON and not os.path.lexists(path) and (path.parent / RUN_JSON).exists():
        raise RunFolderError(
            f"{path.parent} has no {SUMMARY_JSON} (the run did not finish): `loadgen verify {path.parent}` "
            "rebuilds it from run.json, the ledger and the span store"
        )
    try:
        try:
            return decode(_load_json_object(path, SUMMARY_MAX_BYTES))
        except SummaryError as exc:
            raise RunFolderError(f"{path}: {exc}") from exc
    except RunFolderError as exc:
        if not os.path.lexists(path):
            raise
        raise RunFolderError(
            f"{exc}; to rebuild it from the run folder, move it aside and run `loadgen verify {path.parent}`"
        ) from exc


def read_previous_summary(run_dir: Path) -> Summary | None:
    """The summary a verify replaces: None when the run never wrote one (verify rebuilds it)."""
    path = run_dir / SUMMARY_JSON
    return read_summary(path) if os.path.lexists(path) else None


# --- rebuilding a summary the run never wrote ---------------------------------------------------


def locust_totals(run_dir: Path) -> dict[str, int] | None:
    """Locust's own totals from locust.json; None when Locust never wrote it (or it is unusable)."""
    try:
        entries = json.loads((run_dir / "locust.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    try:
        return {
            "requests": sum(int(e.get("num_requests", 0)) for e in entries),
            "failures": sum(int(e.get("num_failures", 0)) for e in entries),
        }
    except (TypeError, ValueError):
        return None


def rebuilt_fields(run_dir: Path, meta: RunMeta) -> dict[str, Any]:
    """What a rebuilt summary carries besides the read-back's numbers: the target, the mesh
    profile, `status: partial` and `recovered`. What only the live run knew is null, and
    `recovered.unknown` lists it."""
    notes = [REBUILT_REASON[0].upper() + REBUILT_REASON[1:] + "."]
    unknown = ["started_at", "queryable"]
    profile: dict[str, Any] | None = None
    profile_path = run_dir / PROFILE_FILE
    if profile_path.exists():
        try:
            data = _load_json_object(profile_path, RUN_JSON_MAX_BYTES)
            profile = MeshProfile.from_dict(data).to_dict()
        except (RunFolderError, ProfileError, KeyError, TypeError, ValueError) as exc:
            notes.append(f"{PROFILE_FILE} could not be read ({exc}); the mesh profile is not shown")
    if profile is None:
        unknown.append("profile")
    else:
        notes.extend(str(n) for n in profile.get("notes") or ())
    locust = locust_totals(run_dir)
    if locust is None:
        unknown.append("locust")
        notes.append("Locust wrote no statistics (locust.json): its own totals are unknown (null)")
    reference = run_dir / "reference.jsonl"
    try:
        ended = summarize_reference_log(read_reference_log(reference)).complete
    except (OSError, ValueError):  # no reference log (nothing was emitted), or an unreadable one
        ended = True
    if not ended:
        notes.append(
            "the reference log has no end record (the emitter was stopped abruptly): reference "
            "traces without an export record count as dropped"
        )
    sources = [name for name in (RUN_JSON, "ledger.jsonl", "reference.jsonl", PROFILE_FILE, "locust.json")
               if (run_dir / name).exists()]  # fmt: skip
    return {
        "status": "partial",
        "status_reason": REBUILT_REASON,
        "recovered": {"at": time.time(), "sources": sources, "unknown": unknown},
        "target": dict(meta.target),
        "profile": profile,
        "started_at": None,
        "queryable": None,  # measured from the end of the load; a later read-back cannot know it
        "locust": locust,
        "readback_notes": [],
        "notes": notes,
    }


# --- keeping earlier summaries ------------------------------------------------------------------


def keep_previous(run_dir: Path) -> Path:
    """Keep run_dir/summary.json before a verify replaces it, never overwriting a kept one:
    summary.previous.json is the first kept (the run's own summary), later ones are
    summary.previous.2.json, .3.json, ... Returns the path written."""
    data = (run_dir / SUMMARY_JSON).read_bytes()
    tmp = run_dir / f".summary.previous.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(data)  # a full disk fails here, before summary.json is touched
        for n in count(1):
            target = run_dir / (PREVIOUS_JSON if n == 1 else f"summary.previous.{n}.json")
            try:
                os.link(tmp, target)  # atomic, and fails rather than replace an existing file
            except FileExistsError:
                continue
            except OSError:  # a filesystem without hard links: create it exclusively instead
                try:
                    with open(target, "xb") as fh:
                        fh.write(data)
                except FileExistsError:
                    continue
            return target
        raise AssertionError("count() does not end")  # pragma: no cover
    finally:
        tmp.unlink(missing_ok=True)


# --- no empty run folder ------------------------------------------------------------------------


def new_dirs(path: Path) -> list[Path]:
    """The folders `path.mkdir(parents=True)` is about to create, deepest first."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def discard_empty(dirs: list[Path]) -> None:
    """Remove the folders of `new_dirs` that are still empty (a run that failed before writing
    anything); rmdir never removes a folder with something in it."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


__all__ = [
    "PREVIOUS_JSON",
    "REBUILT_REASON",
    "RunFolderError",
    "RunMeta",
    "discard_empty",
    "keep_previous",
    "locust_totals",
    "new_dirs",
    "read_previous_summary",
    "read_run_json",
    "read_summary",
    "rebuilt_fields",
    "run_tracer",
]
