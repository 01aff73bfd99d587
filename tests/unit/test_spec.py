"""Job definition validation: each bad input names its field and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from tests.conftest import SEED
from tickwork.errors import ValidationError
from tickwork.spec import JobSpec, check_denied_host, validate_http_url

pytestmark = pytest.mark.unit


def test_seed_is_valid_and_round_trips_by_alias() -> None:
    spec = JobSpec.model_validate(SEED)
    dumped = spec.model_dump(by_alias=True, mode="json")
    assert {k: dumped[k] for k in SEED} == SEED
    assert spec.timezone == "UTC" and spec.queue == "default" and spec.enabled


def errors_of(**changes: Any) -> list[tuple[str, str]]:
    data = {**SEED, **changes}
    data = {k: v for k, v in data.items() if v is not ...}
    with pytest.raises(PydanticValidationError) as info:
        JobSpec.model_validate(data)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"cronExpression": "61 * * * * *"}, "cronExpression", "second field"),
        ({"handlerType": "ftp"}, "handlerType", "http"),
        ({"handlerData": "ftp://example.com/x"}, "", "http:// or https://"),
        ({"handlerData": "http:///nohost"}, "", "no host"),
        ({"retryCount": -1}, "retryCount", "greater than or equal"),
        ({"retryCount": 10**6}, "retryCount", "less than or equal"),
        ({"retryBackoffSeconds": "ten"}, "retryBackoffSeconds", "integer"),
        ({"timezone": "Nowhere/City"}, "timezone", "unknown time zone"),
        ({"name": ""}, "name", "at least 1"),
        ({"name": "has space"}, "name", "letters"),
        ({"queue": "bad queue"}, "queue", "letters"),
        ({"misfirePolicy": "sometimes"}, "misfirePolicy", "fire_once"),
        ({"runAt": "2030-01-01T00:00:00Z"}, "", "not both"),
        ({"parameters": {"method": "FETCH"}}, "", "parameters.method"),
        ({"parameters": {"x": "a" * 70000}}, "parameters", "larger than"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"timeoutSeconds": 0}, "timeoutSeconds", "greater than"),
    ],
)
def test_bad_input_names_field_and_reason(changes: dict[str, Any], field: str, needle: str) -> None:
    errors = errors_of(**changes)
    assert any(loc == field and needle in msg for loc, msg in errors), errors


def test_python_handler_must_look_like_a_function_name() -> None:
    errors = errors_of(handlerType="python", handlerData="not a name!")
    assert any("registered @job" in msg for _, msg in errors)
    assert JobSpec.model_validate({**SEED, "handlerType": "python", "handlerData": "reports.daily"})


def test_one_time_job_without_cron() -> None:
    spec = JobSpec.model_validate({**SEED, "cronExpression": None, "runAt": "2030-01-01T10:00:00+01:00"})
    assert spec.run_at is not None and spec.run_at.isoformat() == "2030-01-01T09:00:00+00:00"


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[fe80::1]",
        "100.100.100.200",
        # IPv6 spellings that reach the IPv4 metadata address: mapped, 6to4, NAT64, compatible.
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]",
        "[64:ff9b::a9fe:a9fe]",
        "[::169.254.169.254]",
    ],
)
def test_denied_networks(host: str) -> None:
    from tickwork.config.settings import ALWAYS_DENIED_NETWORKS

    with pytest.raises(ValidationError) as info:
        validate_http_url(f"http://{host}/latest", list(ALWAYS_DENIED_NETWORKS))
    assert info.value.field == "handlerData" and "denied network" in info.value.reason
    check_denied_host("127.0.0.1", list(ALWAYS_DENIED_NETWORKS))  # loopback is allowed
    check_denied_host("::ffff:127.0.0.1", list(ALWAYS_DENIED_NETWORKS))
