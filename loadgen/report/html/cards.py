"""The headline of the report page: the overall verdict, a card per verdict (its number, badge,
evidence and cause) and the information cards (throughput, latency, time to queryable, kept
trace ids)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.analysis.verdicts import describe_error
from loadgen.report.html.common import (
    VERDICT_TITLES,
    as_dict,
    as_int,
    as_num,
    badge,
    ci_short,
    esc,
    k_of_n,
    ms_text,
    pct_text,
    proportion,
    seconds_text,
    verdict_class,
)
from loadgen.report.render import header_mode_totals


def overall_word(summary: Mapping[str, Any]) -> str:
    values = {str(v) for v in as_dict(summary.get("verdicts")).values()}
    if "fail" in values:
        return "fail"
    if "inconclusive" in values:
        return "inconclusive"
    return "pass" if values else "info"


def overall_section(summary: Mapping[str, Any]) -> str:
    verdicts = {str(k): str(v) for k, v in as_dict(summary.get("verdicts")).items()}
    failed = [k for k, v in verdicts.items() if v == "fail"]
    unsure = [k for k, v in verdicts.items() if v == "inconclusive"]
    if failed:
        cls, word = "fail", "FAIL"
        detail = "failed: " + ", ".join(VERDICT_TITLES.get(k, k) for k in failed)
    elif unsure:
        cls, word = "inconclusive", "INCONCLUSIVE"
        detail = "inconclusive: " + ", ".join(VERDICT_TITLES.get(k, k) for k in unsure)
    elif verdicts:
        cls, word = "pass", "PASS"
        detail = f"all {len(verdicts)} verdicts passed"
    else:
        cls, word, detail = "info", "NO VERDICTS", "the summary has no verdicts"
    partial = ""
    if summary.get("status", "complete") != "complete":
        partial = (
            f'<p class="partial" id="partial"><strong>Partial run</strong> ({esc(summary.get("status_reason") or summary.get("status"))}): '
            "numbers cover what was sent before the stop; unqueried traces are <em>unknown</em>, not missing.</p>"
        )
    return (
        f'<section class="overall {cls}" id="overall"><span class="word">{word}</span>'
        f'<span class="detail">{esc(detail)}</span></section>{partial}'
    )


def card(
    title: str,
    big: str,
    lines: Sequence[str],
    verdict: object | None,
    card_id: str,
    detail: Mapping[str, Any] | None = None,
) -> str:
    """A headline card: title, the number large (its unit after the first space smaller), the
    verdict badge, lines of (already escaped) detail, and from the verdict's `detail`
    (summary["verdict_details"]) how much it checked and, unless it passed, why."""
    cls = verdict_class(verdict) if verdict is not None else "info"
    badge_html = badge(verdict) if verdict is not None else ""
    value, _, unit = big.partition(" ")
    unit_html = f" <small>{esc(unit)}</small>" if unit else ""
    lines = list(lines)
    if detail:
        lines.append(
            f'<span class="evidence">checked {as_int(detail.get("checked")):,} (minimum '
            f"{as_int(detail.get('minimum')):,}) · {esc(detail.get('basis') or '?')}</span>"
        )
        if detail.get("cause"):
            lines.append(f'<span class="cause">why: {esc(detail.get("cause"))}</span>')
    body = "".join(f"<p>{line}</p>" for line in lines)
    return (
        f'<article class="card {cls}" id="card-{esc(card_id)}"><h3>{esc(title)}</h3>'
        f'<div class="row"><div class="big">{esc(value)}{unit_html}</div>{badge_html}</div>{body}</article>'
    )


@dataclass
class _VerdictCards:
    """The verdict cards in order, each with the verdict's badge and detail when it has one."""

    verdicts: Mapping[str, Any]
    details: Mapping[str, Any]
    cards: list[str] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    def add(self, key: str, title: str, big: str, lines: Sequence[str]) -> None:
        self.done.add(key)
        verdict = self.verdicts.get(key) if key in self.verdicts else None
        self.cards.append(card(title, big, lines, verdict, key, as_dict(self.details.get(key))))

    def add_unknown(self) -> None:
        """Verdicts this renderer does not know yet: a card each, named after the key."""
        for key, verdict in self.verdicts.items():
            if str(key) not in self.done:
                title = VERDICT_TITLES.get(str(key), str(key).replace("_", " ").capitalize())
                self.cards.append(
                    card(title, str(verdict), [], verdict, f"extra-{key}", as_dict(self.details.get(key)))
                )


def _load_card(summary: Mapping[str, Any], out: _VerdictCards) -> None:
    if "load_delivered" not in out.verdicts:
        return
    requests = as_dict(summary.get("requests"))
    total, failed = as_int(requests.get("total")), as_int(requests.get("errors"))
    limit = as_num(summary.get("max_error_rate"))
    top = [as_dict(e) for e in requests.get("top_errors") or [] if isinstance(e, Mapping)]
    lines = [
        f"{failed:,} of {total:,} requests failed"
        + (f" · maximum {esc(pct_text(limit, 1))}" if limit is not None else "")
    ]
    if top:
        lines.append(f"most common: {esc(describe_error(top[0]))} ×{as_int(top[0].get('count')):,}")
    big = f"{pct_text(failed / total)} errors" if total else "0 requests"
    out.add("load_delivered", VERDICT_TITLES["load_delivered"], big, lines)


def _sampling_cards(summary: Mapping[str, Any], out: _VerdictCards) -> None:
    sampling = as_dict(summary.get("sampling"))
    conf = as_num(sampling.get("configured_percent"))
    basis = sampling.get("verdict_basis")
    pvalue = as_num(sampling.get("p_value"))
    out.add(
        "sampling",
        VERDICT_TITLES["sampling"],
        pct_text(proportion(sampling.get("decision"))[0]),
        [
            esc(ci_short(sampling.get("decision"))),
            k_of_n(sampling.get("decision"), "no-flag requests sampled"),
            "configured "
            + (esc(f"{conf:g} %") if conf is not None else "<em>unknown</em>")
            + f" · {esc(basis or 'n/a')}"
            + (f" · p = {pvalue:.3g}" if pvalue is not None else ""),
        ],
    )
    pred = as_dict(sampling.get("prediction"))
    if "sampling_prediction" in out.verdicts or as_int(pred.get("checked")):
        out.add(
            "sampling_prediction",
            VERDICT_TITLES["sampling_prediction"],
            f"{as_int(pred.get('mismatches')):,} mismatches",
            [f"of {as_int(pred.get('checked')):,} decisions checked against Envoy's x-request-id rule"],
        )


def _mesh_cards(summary: Mapping[str, Any], out: _VerdictCards) -> None:
    mesh = as_dict(summary.get("mesh"))
    min_collection = as_num(summary.get("min_collection"))
    out.add(
        "mesh_collection",
        VERDICT_TITLES["mesh_collection"],
        pct_text(proportion(mesh.get("collection"))[0]),
        [
            esc(ci_short(mesh.get("collection"))),
            k_of_n(mesh.get("collection"), "sampled traces complete"),
            f"partial {as_int(mesh.get('partial')):,} · unknown {as_int(mesh.get('unknown')):,}"
            + (f" · not queried {as_int(mesh.get('not_queried')):,}" if mesh.get("not_queried") else "")
            + (f" · minimum {esc(pct_text(min_collection, 1))}" if min_collection is not None else ""),
        ],
    )
    modes = as_dict(summary.get("modes"))
    not_sampled = sum(as_int(as_dict(m).get("decided_not_sampled")) for m in modes.values())
    leak_lines = [f"traces found among {not_sampled:,} requests decided <em>not</em> sampled"]
    if "leak_checked" in mesh:
        leak_lines.insert(
            0, f"{as_int(mesh.get('leaked')):,} leaked of {as_int(mesh.get('leak_checked')):,} queried"
        )
    out.add("no_leaks", VERDICT_TITLES["no_leaks"], f"{as_int(mesh.get('leaked')):,} leaked", leak_lines)


def _reference_and_header_cards(summary: Mapping[str, Any], out: _VerdictCards) -> None:
    ref = as_dict(summary.get("reference"))
    if "reference_collection" in out.verdicts or as_int(ref.get("started")):
        out.add(
            "reference_collection",
            VERDICT_TITLES["reference_collection"],
            pct_text(proportion(ref.get("collection"))[0]),
            [
                esc(ci_short(ref.get("collection"))),
                k_of_n(ref.get("collection"), "exported traces complete"),
                f"partial {as_int(ref.get('partial')):,} · failed {as_int(ref.get('failed')):,} · "
                f"dropped {as_int(ref.get('dropped')):,}",
            ],
        )
    if "header_modes" in out.verdicts:
        checked, violations = header_mode_totals(dict(summary))
        out.add(
            "header_modes",
            VERDICT_TITLES["header_modes"],
            f"{violations:,} violations",
            [f"of {checked:,} answered requests checked against what the mesh profile predicts"],
        )


def verdict_cards(summary: Mapping[str, Any]) -> list[str]:
    """A card per verdict: the ones this renderer knows in a fixed order, then any other."""
    out = _VerdictCards(as_dict(summary.get("verdicts")), as_dict(summary.get("verdict_details")))
    _load_card(summary, out)
    _sampling_cards(summary, out)
    _mesh_cards(summary, out)
    _reference_and_header_cards(summary, out)
    out.add_unknown()
    return out.cards


def _throughput_card(summary: Mapping[str, Any]) -> str:
    requests = as_dict(summary.get("requests"))
    total, errors = as_int(requests.get("total")), as_int(requests.get("errors"))
    first, last = as_num(requests.get("first_ts")), as_num(requests.get("last_ts"))
    duration = (last - first) if first is not None and last is not None and last > first else None
    rps = f"{total / duration:,.0f} req/s" if duration else "n/a"
    return card(
        "Throughput",
        rps,
        [
            f"{total:,} requests in {esc(seconds_text(duration))}",
            f"{errors:,} errors ({esc(pct_text(errors / total if total else None))})",
        ],
        None,
        "throughput",
    )


def _latency_card(summary: Mapping[str, Any]) -> str:
    latency = as_dict(summary.get("latency_ms"))
    worst = max(
        ((str(m), as_num(as_dict(v).get("p99"))) for m, v in latency.items()),
        key=lambda mv: mv[1] if mv[1] is not None else -1.0,
        default=("", None),
    )
    return card(
        "Latency p99 (worst mode)",
        f"{ms_text(worst[1])} ms",
        [f"mode <code>{esc(worst[0])}</code>" if worst[0] else "no successful request"],
        None,
        "latency",
    )


def _queryable_card(summary: Mapping[str, Any]) -> str:
    q = as_dict(summary.get("queryable"))
    if not q:
        return ""
    return card(
        "Time to queryable (t99)",
        seconds_text(q.get("t99_s")),
        [
            f"t50 {esc(seconds_text(q.get('t50_s')))} · t100 {esc(seconds_text(q.get('t100_s')))} "
            f"after the last request · {as_int(q.get('traces')):,} traces",
            f"resolution {esc(seconds_text(q.get('resolution_s')))} (one poll)",
        ],
        None,
        "queryable",
    )


def _propagation_card(summary: Mapping[str, Any]) -> str:
    prop = as_dict(summary.get("propagation"))
    if not prop:
        return ""
    backend = as_dict(prop.get("backend"))
    return card(
        "Injected trace ids kept",
        pct_text(proportion(prop)[0]),
        [
            f"upstream {as_int(prop.get('k')):,} of {as_int(prop.get('n')):,}",
            f"found under the injected id {as_int(backend.get('k')):,} of {as_int(backend.get('n')):,}",
        ],
        None,
        "propagation",
    )


def cards_section(summary: Mapping[str, Any]) -> str:
    """The verdict cards, then the information cards (no verdict of their own)."""
    info = [
        _throughput_card(summary),
        _latency_card(summary),
        _queryable_card(summary),
        _propagation_card(summary),
    ]
    return (
        '<section class="cards" id="cards">'
        + "".join(verdict_cards(summary))
        + '</section><section class="cards info" id="info-cards">'
        + "".join(info)
        + "</section>"
    )
