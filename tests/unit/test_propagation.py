"""loadgen.mesh (ids, modes, encode, echo, rule): ids, header modes, B3 encoders/parsers and Envoy's x-request-id rules.

Expectations come from the B3 spec (https://github.com/openzipkin/b3-propagation), from
shared/ENVOY-NOTES.md (measured Envoy behaviour) and from Envoy's own source for the sampling
threshold (`ProtobufPercentHelper::convertPercent`: `uint64_t(max_value * (percent / 100.0))`).
"""

from __future__ import annotations

import math
import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.mesh.echo import UpstreamView, parse_b3_single, parse_echo
from loadgen.mesh.encode import encode
from loadgen.mesh.expect import Decision
from loadgen.mesh.ids import is_hex_id, new_span_id, new_trace_id, normalize_trace_id
from loadgen.mesh.modes import DEFAULT_MIX, LEGACY_MODES, MODE_SPECS, HeaderMode, format_mix, parse_mix
from loadgen.mesh.rule import XRID_TRACE_REASON, envoy_random_sampled, xrid_decision

HEX = "0123456789abcdef"
hex64 = st.text(alphabet=HEX, min_size=16, max_size=16)
hex128 = st.text(alphabet=HEX, min_size=32, max_size=32)

MULTI_MODES = (HeaderMode.B3_MULTI_SAMPLED, HeaderMode.B3_MULTI_NOT_SAMPLED, HeaderMode.B3_MULTI_NO_FLAG)
SINGLE_MODES = (HeaderMode.B3_SINGLE_SAMPLED, HeaderMode.B3_SINGLE_NOT_SAMPLED, HeaderMode.B3_SINGLE_NO_FLAG)


def xrid(head: int, reason: str = "4") -> str:
    """A UUID-shaped x-request-id whose first 8 hex chars are `head` and char 14 is `reason`."""
    value = f"{head:08x}-1c2d-{reason}e3f-8a4b-0123456789ab"
    assert value[14] == reason and len(value) == 36
    return value


def envoy_numerator(percent: float) -> int:
    """Envoy's numerator over 10000 for `random_sampling` (a double percent), as Envoy computes it:
    `static_cast<uint64_t>(10000 * (percent / 100.0))` (truncation toward zero)."""
    return int(10000 * (percent / 100.0))


# --- normalize_trace_id / is_hex_id --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("463AC35C9F6413AD48485A3953BB6124", "463ac35c9f6413ad48485a3953bb6124"),
        ("0000000000000000a3ce929d0e0e4736", "a3ce929d0e0e4736"),
        ("0000000000000000A3CE929D0E0E4736", "a3ce929d0e0e4736"),
        ("  d2f9288a2904503d\n", "d2f9288a2904503d"),
        ("0000000000000001a3ce929d0e0e4736", "0000000000000001a3ce929d0e0e4736"),
        ("00000000000000000000000000000000", "0000000000000000"),
        ("000000000000000000a3ce929d0e0e4736", "000000000000000000a3ce929d0e0e4736"),  # 34 chars: unchanged
    ],
)
def test_normalize_trace_id(raw: str, expected: str) -> None:
    assert normalize_trace_id(raw) == expected


@given(low=hex64)
def test_normalize_collapses_zero_high_half_to_the_64_bit_id(low: str) -> None:
    assert normalize_trace_id("0" * 16 + low) == low
    assert normalize_trace_id(low.upper()) == low


@given(tid=st.one_of(hex64, hex128, st.text(max_size=40)))
def test_normalize_is_idempotent(tid: str) -> None:
    once = normalize_trace_id(tid)
    assert normalize_trace_id(once) == once


def test_is_hex_id() -> None:
    assert is_hex_id("a" * 16) and is_hex_id("0" * 32)
    assert not is_hex_id("A" * 16)  # canonical ids are lowercase
    assert not is_hex_id("g" * 16)
    assert not is_hex_id("a" * 24)
    assert is_hex_id("a" * 24, lengths=(24,))


# --- id generation -------------------------------------------------------------------------------


def test_new_ids_are_lowercase_hex_of_the_right_width_and_reproducible() -> None:
    rng = random.Random(7)
    ids = [new_trace_id(rng) for _ in range(200)]
    spans = [new_span_id(rng) for _ in range(200)]
    assert all(is_hex_id(t, (32,)) for t in ids)
    assert all(is_hex_id(s, (16,)) for s in spans)
    assert len(set(ids)) == len(ids)
    again = random.Random(7)
    assert [new_trace_id(again) for _ in range(200)] == ids


class _ZeroFirst(random.Random):
    """Returns 0 on the first getrandbits call, then 5."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def getrandbits(self, k: int) -> int:
        self.calls += 1
        return 0 if self.calls == 1 else 5


def test_new_trace_id_never_returns_the_invalid_all_zero_id() -> None:
    rng = _ZeroFirst()
    assert new_trace_id(rng) == "0" * 31 + "5"
    assert rng.calls == 2
    rng = _ZeroFirst()
    assert new_span_id(rng) == "0" * 15 + "5"


# --- modes as data -------------------------------------------------------------------------------


def test_mode_specs_cover_every_mode_and_flag_matches_decision() -> None:
    assert set(MODE_SPECS) == set(HeaderMode)
    for mode, spec in MODE_SPECS.items():
        assert spec.mode is mode
        assert spec.description
    # The first seven modes keep their meaning (the full matrix is in tests/unit/test_modes.py).
    want = {"1": Decision.FORCED_SAMPLED, "0": Decision.FORCED_NOT_SAMPLED, None: Decision.PROXY}
    for mode in LEGACY_MODES:
        spec = MODE_SPECS[mode]
        assert spec.decision is want[spec.flag], mode
        assert spec.injects_ids == (mode is not HeaderMode.NONE)


def test_default_mix_is_a_valid_mix_over_all_modes() -> None:
    assert set(DEFAULT_MIX) == set(LEGACY_MODES)  # the default traffic did not change
    assert all(w >= 0 for w in DEFAULT_MIX.values()) and sum(DEFAULT_MIX.values()) > 0
    assert parse_mix(format_mix(DEFAULT_MIX)) == DEFAULT_MIX


# --- parse_mix / format_mix ----------------------------------------------------------------------


def test_parse_mix_reads_weights_and_tolerates_spaces_and_empty_entries() -> None:
    mix = parse_mix(" none = 4 , b3_multi_sampled=1.5,,b3_single_no_flag=0 ,")
    assert mix == {HeaderMode.NONE: 4.0, HeaderMode.B3_MULTI_SAMPLED: 1.5, HeaderMode.B3_SINGLE_NO_FLAG: 0.0}
    assert list(mix) == [HeaderMode.NONE, HeaderMode.B3_MULTI_SAMPLED, HeaderMode.B3_SINGLE_NO_FLAG]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("none", "MODE=WEIGHT"),
        ("w3c=1", "unknown header mode 'w3c'"),
        ("none=lots", "must be a number"),
        ("none=-1", ">= 0"),
        ("none=nan", ">= 0"),
        ("none=inf", "must be a finite number"),  # random.choices would raise on every draw: 0 requests
        ("none=1,b3_multi_sampled=Infinity", "must be a finite number"),
        ("none=-inf", ">= 0"),
        ("none=1e308,b3_multi_sampled=1e308", "add up to more than a float"),
        ("none=4,b3_multi_sampled=1,none=2", "none is given twice"),
        ("none=0,b3_multi_sampled=0", "positive weight"),
        ("", "positive weight"),
        (" , ", "positive weight"),
    ],
)
def test_parse_mix_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_parse_mix_error_lists_known_modes() -> None:
    with pytest.raises(ValueError) as info:
        parse_mix("b3=1")
    for mode in HeaderMode:
        assert mode.value in str(info.value)


@given(
    st.dictionaries(
        st.sampled_from(list(HeaderMode)), st.integers(min_value=0, max_value=100_000), min_size=1
    ).filter(lambda d: sum(d.values()) > 0)
)
def test_format_then_parse_mix_round_trips(mix: dict[HeaderMode, int]) -> None:
    text = format_mix({m: float(w) for m, w in mix.items()})
    assert parse_mix(text) == {m: float(w) for m, w in mix.items()}


# --- encode --------------------------------------------------------------------------------------


def test_encode_none_sends_nothing() -> None:
    inj = encode(HeaderMode.NONE, random.Random(1))
    assert inj.headers == {} and inj.trace_id is None and inj.span_id is None and inj.flag is None


@pytest.mark.parametrize("mode", MULTI_MODES)
def test_encode_b3_multi(mode: HeaderMode) -> None:
    inj = encode(mode, random.Random(2))
    flag = MODE_SPECS[mode].flag
    expected = {"X-B3-TraceId": inj.trace_id, "X-B3-SpanId": inj.span_id}
    if flag is not None:
        expected["X-B3-Sampled"] = flag
    assert inj.headers == expected
    assert inj.flag == flag
    assert inj.trace_id is not None and is_hex_id(inj.trace_id, (32,))
    assert inj.span_id is not None and is_hex_id(inj.span_id, (16,))


@pytest.mark.parametrize("mode", SINGLE_MODES)
def test_encode_b3_single(mode: HeaderMode) -> None:
    inj = encode(mode, random.Random(3))
    flag = MODE_SPECS[mode].flag
    assert list(inj.headers) == ["b3"]
    parts = inj.headers["b3"].split("-")
    assert parts[:2] == [inj.trace_id, inj.span_id]
    assert parts[2:] == ([] if flag is None else [flag])
    assert parse_b3_single(inj.headers["b3"]) == (inj.trace_id, inj.span_id, flag)


@pytest.mark.parametrize("mode", LEGACY_MODES)
def test_an_unchanged_echo_of_encoded_headers_reads_back_the_injection(mode: HeaderMode) -> None:
    inj = encode(mode, random.Random(4))
    view = parse_echo(inj.headers)
    assert (view.trace_id, view.span_id, view.flag) == (inj.trace_id, inj.span_id, inj.flag)
    assert view.sampled == {"1": True, "0": False, None: None}[inj.flag]


def test_encode_uses_fresh_ids_per_request() -> None:
    rng = random.Random(5)
    a, b = encode(HeaderMode.B3_MULTI_SAMPLED, rng), encode(HeaderMode.B3_MULTI_SAMPLED, rng)
    assert a.trace_id != b.trace_id and a.span_id != b.span_id


# --- parse_b3_single -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "1")),
        ("80F198EE56343BA8-E457B5A2E4D86BD1-D", ("80f198ee56343ba8", "e457b5a2e4d86bd1", "d")),
        ("80f198ee56343ba8-e457b5a2e4d86bd1", ("80f198ee56343ba8", "e457b5a2e4d86bd1", None)),
        ("80f198ee56343ba8-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90", ("80f198ee56343ba8", "e457b5a2e4d86bd1", "0")),
        ("0", (None, None, "0")),
        (" d ", (None, None, "d")),
        ("", (None, None, None)),
    ],
)  # fmt: skip
def test_parse_b3_single(value: str, expected: tuple[str | None, str | None, str | None]) -> None:
    assert parse_b3_single(value) == expected


# --- parse_echo / UpstreamView -------------------------------------------------------------------

T128 = "463ac35c9f6413ad48485a3953bb6124"
S64 = "a2fb4a1d1a96d312"


def test_parse_echo_is_case_insensitive_and_lowercases_ids() -> None:
    view = parse_echo(
        {"x-B3-traceid": T128.upper(), "X-B3-SPANID": S64.upper(), "x-b3-SAMPLED": "1", "X-Request-Id": "RID"}
    )
    assert view == UpstreamView(T128, S64, "1", "RID")
    assert view.sampled is True


@pytest.mark.parametrize(
    ("value", "flag"), [("true", "1"), ("True", "1"), ("false", "0"), ("0", "0"), ("1", "1")]
)
def test_x_b3_sampled_true_false_spellings(value: str, flag: str) -> None:
    view = parse_echo({"X-B3-TraceId": T128, "X-B3-SpanId": S64, "X-B3-Sampled": value})
    assert view.flag == flag
    assert view.sampled is (flag == "1")


def test_x_b3_flags_1_alone_is_not_a_sampled_flag() -> None:
    # ENVOY-NOTES: "X-B3-Flags: 1 alone does not force sampling (passed through)"; the decision
    # the upstream saw is X-B3-Sampled (absent here), so the echo carries no flag.
    view = parse_echo({"X-B3-TraceId": T128, "X-B3-SpanId": S64, "X-B3-Flags": "1"})
    assert view.flag is None
    view = parse_echo({"X-B3-TraceId": T128, "X-B3-SpanId": S64, "X-B3-Flags": "1", "X-B3-Sampled": "0"})
    assert view.flag == "0" and view.sampled is False


def test_b3_single_wins_over_stale_multi_headers() -> None:
    other = "11111111111111112222222222222222"
    view = parse_echo(
        {
            "X-B3-TraceId": other,
            "X-B3-SpanId": "3333333333333333",
            "X-B3-Sampled": "0",
            "B3": f"{T128}-{S64}-1",
            "x-request-id": xrid(1, "4"),
        }
    )
    assert (view.trace_id, view.span_id, view.flag) == (T128, S64, "1")
    assert view.sampled is True
    assert view.request_id == xrid(1, "4")


def test_without_a_flag_the_decision_comes_from_the_x_request_id() -> None:
    sampled = parse_echo({"x-b3-traceid": T128, "x-request-id": xrid(1, "9")})
    not_sampled = parse_echo({"x-b3-traceid": T128, "x-request-id": xrid(1, "4")})
    unknown = parse_echo({"x-b3-traceid": T128})
    assert (sampled.flag, sampled.sampled) == (None, True)
    assert (not_sampled.flag, not_sampled.sampled) == (None, False)
    assert unknown.sampled is None


def test_flag_outranks_the_x_request_id_mark() -> None:
    assert parse_echo({"x-b3-sampled": "0", "x-request-id": xrid(1, "9")}).sampled is False
    assert parse_echo({"b3": "1", "x-request-id": xrid(1, "4")}).sampled is True


def test_empty_echo() -> None:
    view = parse_echo({})
    assert view == UpstreamView(None, None, None, None)
    assert view.sampled is None


# --- x-request-id decision mark ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("9", True), ("4", False), ("a", True), ("b", True), ("A", True), ("B", True), ("0", None), ("f", None)],
)
def test_xrid_decision_reads_char_14(reason: str, expected: bool | None) -> None:
    assert xrid_decision(xrid(0xDEADBEEF, reason)) is expected


def test_xrid_decision_table_matches_envoy_notes() -> None:
    assert XRID_TRACE_REASON == {"9": "sampled", "4": "not_sampled", "a": "forced", "b": "client_forced"}


@pytest.mark.parametrize("value", [None, "", "0123456789abcd", "short"])
def test_xrid_decision_unknown_for_missing_or_short_ids(value: str | None) -> None:
    assert xrid_decision(value) is None


def test_xrid_decision_looks_only_at_char_14() -> None:
    base = list(xrid(0, "9"))
    for i in range(len(base)):
        if i == 14:
            continue
        mutated = base.copy()
        mutated[i] = "4"
        assert xrid_decision("".join(mutated)) is True


# --- Envoy's random-sampling rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "residue", "expected"),
    [
        (10.0, 999, True),
        (10.0, 1000, False),
        (12.34, 1233, True),
        (12.34, 1234, False),
        (1.0, 99, True),
        (1.0, 100, False),
        (100.0, 9999, True),
        (0.0, 0, False),
        (0.01, 0, True),
        (0.01, 1, False),
    ],
)
def test_envoy_rule_threshold(percent: float, residue: int, expected: bool) -> None:
    # The head is taken modulo 10000: several wraps land on the same residue.
    for wraps in (0, 1, 7, (0xFFFFFFFF - residue) // 10000):
        head = wraps * 10000 + residue
        assert envoy_random_sampled(xrid(head), percent) is expected, (percent, head)


def test_envoy_rule_truncates_0_29_percent_to_28_per_10000() -> None:
    """shared/ENVOY-NOTES.md (measured): "The percentage is truncated: 0.29 % means 28/10000".
    Envoy computes `uint64_t(10000 * (0.29 / 100.0))` = uint64_t(28.999999999999996) = 28."""
    assert envoy_random_sampled(xrid(27), 0.29) is True
    assert envoy_random_sampled(xrid(10_027), 0.29) is True
    assert envoy_random_sampled(xrid(28), 0.29) is False
    assert envoy_random_sampled(xrid(10_028), 0.29) is False


def test_envoy_rule_matches_envoy_numerator_for_every_two_decimal_percent() -> None:
    """For p = 0.00 .. 100.00 in steps of 0.01, the last sampled and first unsampled residues
    must be exactly where Envoy's truncated numerator puts them."""
    wrong = []
    for hundredths in range(10_001):
        percent = hundredths / 100
        numerator = envoy_numerator(percent)
        if numerator > 0 and envoy_random_sampled(xrid(numerator - 1), percent) is not True:
            wrong.append((percent, numerator - 1))
        if numerator < 10_000 and envoy_random_sampled(xrid(numerator), percent) is not False:
            wrong.append((percent, numerator))
    assert wrong == [], f"{len(wrong)} (percent, residue) disagree with Envoy, e.g. {wrong[:5]}"


def test_envoy_rule_accepts_uppercase_hex_and_rejects_unparsable_heads() -> None:
    assert envoy_random_sampled(xrid(5).upper(), 10.0) is True
    for bad in ("", "abc", "1234567", "zzzzzzzz-0000-4000-8000-000000000000", "0000 000-0000"):
        assert envoy_random_sampled(bad, 100.0) is None, bad


@given(
    head=st.integers(min_value=0, max_value=0xFFFFFFFF), numerator=st.integers(min_value=0, max_value=10_000)
)
def test_envoy_rule_on_integer_numerators(head: int, numerator: int) -> None:
    # numerator/100 percent is exact in the cases where floating point cannot disagree.
    percent = numerator / 100
    if envoy_numerator(percent) != numerator or math.floor(10000 * percent / 100.0) != numerator:
        return
    assert envoy_random_sampled(xrid(head), percent) is (head % 10000 < numerator)


def test_random_request_ids_sample_at_about_the_configured_rate() -> None:
    rng = random.Random(20261127)
    n = 20_000
    ids = [
        "".join(rng.choice(string.hexdigits[:16]) for _ in range(8)) + "-0000-4000-8000-000000000000"
        for _ in range(n)
    ]
    k = sum(bool(envoy_random_sampled(x, 10.0)) for x in ids)
    # Binomial(20000, 0.1): sd = 42.4; 6 sd either side.
    assert abs(k - 2000) < 6 * math.sqrt(n * 0.1 * 0.9)


def test_parse_echo_accepts_go_httpbin_list_values() -> None:
    view = parse_echo(
        {"X-B3-Traceid": [T128], "X-B3-Spanid": [S64], "X-B3-Sampled": ["1"], "X-Request-Id": ["x"]}
    )
    assert (view.trace_id, view.span_id, view.flag, view.request_id) == (T128, S64, "1", "x")
