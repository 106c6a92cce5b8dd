"""The current-versions topic's records: encoding, decoding, and what a follower makes of them."""

from __future__ import annotations

import json
import os

import pytest

from rtml.scoring.model_versions import (
    CurrentVersions,
    Promotion,
    decode_record,
    encode_promotion,
)


def test_a_promotion_round_trips() -> None:
    key, value = encode_promotion("fraud", "12")
    assert key == b"fraud"
    assert json.loads(value) == {"version": "12"}
    assert decode_record(key, value) == ("fraud", Promotion("12"))


def test_a_promotion_carries_the_versions_features_and_threshold() -> None:
    key, value = encode_promotion("fraud", "3", ["amount", "tx_count_1m"], 0.25)
    assert json.loads(value) == {
        "version": "3", "feature_names": ["amount", "tx_count_1m"], "threshold": 0.25,
    }  # fmt: skip
    assert decode_record(key, value) == ("fraud", Promotion("3", ("amount", "tx_count_1m"), 0.25))
    versions = CurrentVersions()
    versions.apply(key, value)
    assert versions.get("fraud") == "3"
    assert versions.promotion("fraud") == Promotion("3", ("amount", "tx_count_1m"), 0.25)


@pytest.mark.parametrize(
    ("names", "threshold", "reason"),
    [([], None, "feature_names must be"), (["a", 1], None, "feature_names must be"),
     (None, 1.5, r"within \[0, 1\]"), (None, True, "must be a number")],
)  # fmt: skip
def test_bad_features_or_thresholds_are_refused_both_ways(
    names: list | None, threshold: object, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_promotion("fraud", "3", names, threshold)  # type: ignore[arg-type]
    payload = {"version": "3", "feature_names": names, "threshold": threshold}
    with pytest.raises(ValueError, match=reason):
        decode_record(b"fraud", json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("model", "version"), [("", "1"), ("fraud", ""), ("fraud", "../2"), ("a b", "1")]
)
def test_names_that_are_not_url_segments_are_refused(model: str, version: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        encode_promotion(model, version)


def test_a_tombstone_decodes_to_no_version() -> None:
    assert decode_record(b"fraud", None) == ("fraud", None)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b'{"version": "1"}', "without a key"),
        (b"fraud", b"{not json", "not JSON"),
        (b"fraud", b'{"v": "1"}', "no version"),
        (b"fraud", b'{"version": true}', "no version"),
        (b"fraud", b'["1"]', "no version"),
        (b"fraud", b'{"version": "a/b"}', "invalid version"),
    ],
)
def test_malformed_records_are_errors(key: bytes | None, value: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_record(key, value)


def test_an_integer_version_is_taken_as_its_text() -> None:
    assert decode_record(b"fraud", b'{"version": 3}') == ("fraud", Promotion("3"))


def test_the_newest_record_per_model_wins_and_a_tombstone_withdraws_it() -> None:
    versions = CurrentVersions()
    assert versions.get("fraud") is None
    for key, value in [
        (b"fraud", b'{"version": "1"}'),
        (b"churn", b'{"version": "7"}'),
        (b"fraud", b'{"version": "2"}'),
    ]:
        assert versions.apply(key, value) is None
    assert (versions.get("fraud"), versions.get("churn")) == ("2", "7")
    assert versions.apply(b"fraud", None) is None
    assert (versions.get("fraud"), versions.get("churn")) == (None, "7")


def test_a_bad_record_is_ignored_and_counted_and_the_version_stays() -> None:
    versions = CurrentVersions()
    versions.apply(b"fraud", b'{"version": "2"}')
    problem = versions.apply(b"fraud", b"oops")
    assert problem is not None and "not JSON" in problem
    assert versions.get("fraud") == "2"
    assert versions.bad_records == 1


def test_promoting_a_version_the_server_does_not_serve_is_refused() -> None:
    from ephemeral import run_rtml

    from rtml import processes

    env = {**os.environ, "RTML_MODEL_URL": f"http://127.0.0.1:{processes.free_port()}"}
    result = run_rtml(env, "models", "promote", "fraud", "7", timeout=60)
    assert result.returncode == 1
    assert "does not serve model fraud version 7" in result.stderr
