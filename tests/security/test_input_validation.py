"""Issue 10.4, 10.6, 10.7, 10.8 and 10.12: hostile input is refused at definition with 422
naming the field, and nothing is written.

The API runs on a SQLite file (no services needed); the address checks compare with what the
system resolver itself makes of each spelling.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.conftest import SEED
from tests.security.hostile_server import hostile_server
from tickwork.actors.http import http_request
from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.config.settings import ALWAYS_DENIED_NETWORKS
from tickwork.middleware.attempt import JobFailed
from tickwork.spec import JobSpec, resolver_address
from tickwork.store.engine import make_engine, session_factory, upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import Job, JobRun

pytestmark = pytest.mark.security

SECRET = "security-tests-secret-0123456789abcdef"


@dataclass
class Api:
    client: TestClient
    engine: Engine
    admin: dict[str, str]
    viewer: dict[str, str]

    def counts(self) -> tuple[int, int]:
        with session_factory(self.engine)() as session:
            jobs = session.scalar(select(func.count()).select_from(Job)) or 0
            runs = session.scalar(select(func.count()).select_from(JobRun)) or 0
        return int(jobs), int(runs)

    def create_seed(self) -> int:
        response = self.client.post("/jobs", json=SEED, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def post_raw(self, path: str, text: str, method: str = "POST") -> Any:
        """Send JSON text as written (``\\udc00`` escapes stay escapes on the wire)."""
        headers = {**self.admin, "Content-Type": "application/json"}
        return self.client.request(method, path, content=text.encode("utf-8"), headers=headers)


def make_api(tmp_path: Path, **overrides: Any) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(database_url=url, broker_url="memory://", auth_secret=SECRET, **overrides)
    engine = make_engine(url)
    with TestClient(create_app(settings, engine=engine)) as client:
        yield Api(
            client=client,
            engine=engine,
            admin={"Authorization": f"Bearer {create_token(settings, 'admin')}"},
            viewer={"Authorization": f"Bearer {create_token(settings, 'viewer')}"},
        )
    engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


def refused(response: Any, field: str) -> str:
    """Assert a 422 whose first error names ``field``; return its reason."""
    assert response.status_code == 422, response.text
    response.content.decode("utf-8")  # the answer itself is valid UTF-8
    error = response.json()["detail"][0]
    assert error["field"] == field, error
    return str(error["reason"])


# --- 10.4: lone surrogates in object keys ----------------------------------------------------


def seed_text(**fields: Any) -> str:
    """The seed job as JSON text, with ``fields`` given as raw JSON text."""
    text = json.dumps(SEED)[:-1]
    return text + "".join(f', "{name}": {raw}' for name, raw in fields.items()) + "}"


def test_a_lone_surrogate_in_a_key_is_422_naming_the_escaped_field(api: Api) -> None:
    before = api.counts()
    response = api.post_raw("/jobs", seed_text(parameters='{"json": {"\\udc00": 1}}'))
    assert "surrogate" in refused(response, "parameters.json.\\udc00")
    response = api.post_raw("/jobs", seed_text(parameters='{"json": {"a": {"x\\ud800y": [1]}}}'))
    refused(response, "parameters.json.a.x\\ud800y")
    response = api.post_raw("/jobs", seed_text(parameters='{"headers": {"\\udc00": "v"}}'))
    refused(response, "parameters.headers.\\udc00")
    # As a top-level key pydantic cannot read it as text at all: still a 422, not a 500.
    response = api.post_raw("/jobs", json.dumps(SEED)[:-1] + ', "\\udc00": 1}')
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "body"
    assert api.counts() == before


def test_patch_and_trigger_refuse_lone_surrogates_too(api: Api) -> None:
    job = api.client.post("/jobs", json=SEED, headers=api.admin).json()
    response = api.post_raw(f"/jobs/{job['id']}", '{"parameters": {"json": {"\\udc00": 1}}}', method="PATCH")
    refused(response, "parameters.json.\\udc00")
    assert api.client.get(f"/jobs/{job['id']}", headers=api.admin).json()["version"] == job["version"]
    python_job = create_job(
        api.engine,
        JobSpec.model_validate({"name": "py", "handlerType": "python", "handlerData": "tests.nothing"}),
    )
    before = api.counts()
    response = api.post_raw(f"/jobs/{python_job.id}/trigger", '{"kwargs": {"\\udc00": 1}}')
    refused(response, "kwargs.\\udc00")
    response = api.post_raw(f"/jobs/{python_job.id}/trigger", '{"args": [{"\\udfff": 1}]}')
    refused(response, "args.0.\\udfff")
    assert api.counts() == before  # no run written


# --- 10.6: header values and hosts are checked when the job is defined ------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Test": 5}, "must be a string"),
        ({"X-Test": 1.5}, "must be a string"),
        ({"X-Test": True}, "must be a string"),
        ({"X-Test": None}, "must be a string"),
        ({"X-Test": {"a": 1}}, "must be a string"),
        ({"X-Test": ["a"]}, "must be a string"),
        ({"X-Test": "a\r\nInjected: yes"}, "no CR or LF"),
        ({"X-Test": "a\nb"}, "no CR or LF"),
        ({"X-Test": "nul\x00"}, "no CR or LF"),
        ({"X-Test": "caf\u00e9"}, "printable ASCII"),
    ],
)
def test_bad_header_values_are_422_at_definition(api: Api, headers: dict[str, Any], reason: str) -> None:
    before = api.counts()
    response = api.client.post("/jobs", json={**SEED, "parameters": {"headers": headers}}, headers=api.admin)
    assert reason in refused(response, "parameters.headers.X-Test")
    assert api.counts() == before


@pytest.mark.parametrize("name", ["X Test", "X-Test:", "", "X\r\nY", "Bad(name)", "Ünicode"])
def test_bad_header_names_are_422_at_definition(api: Api, name: str) -> None:
    response = api.client.post(
        "/jobs", json={**SEED, "parameters": {"headers": {name: "v"}}}, headers=api.admin
    )
    refused(response, f"parameters.headers.{name}")


def test_query_values_are_scalars(api: Api) -> None:
    for value in ({"a": 1}, [[1]], [{"a": 1}]):
        response = api.client.post(
            "/jobs", json={**SEED, "parameters": {"query": {"q": value}}}, headers=api.admin
        )
        refused(response, "parameters.query.q")
    ok = {"q": "x", "n": 1, "f": 1.5, "b": True, "none": None, "many": ["a", 2]}
    assert (
        api.client.post("/jobs", json={**SEED, "parameters": {"query": ok}}, headers=api.admin).status_code
        == 201
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://exa mple.com/",
        "http://example.com\t/",
        # Fullwidth digits: invalid IDNA; Python's resolver would map them to ASCII ones.
        "http://\uff11\uff12\uff17.0.0.1/",
        "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",
        "http://ex%61mple.com/",
        "http://%31%36%39.254.169.254/",
        "http://exa<mple.com/",
    ],
)
def test_hosts_the_resolver_would_read_differently_are_422(api: Api, url: str) -> None:
    before = api.counts()
    refused(api.client.post("/jobs", json={**SEED, "handlerData": url}, headers=api.admin), "handlerData")
    assert api.counts() == before


def test_internationalized_hosts_are_still_accepted(api: Api) -> None:
    response = api.client.post(
        "/jobs", json={**SEED, "handlerData": "http://bücher.example/x"}, headers=api.admin
    )
    assert response.status_code == 201, response.text


# --- 10.7 and 10.8: every spelling of a denied address, a deny list that only adds -----------

#: inet_aton forms of 169.254.169.254: what glibc's resolver reads them as. With a trailing dot
#: a name goes to DNS (no answer here), but a DNS server may answer it: refused as the address.
METADATA_SPELLINGS = [
    "0xa9fea9fe",
    "2852039166",
    "0251.0376.0251.0376",
    "169.254.43518",
    "0xa9.0xfe.0xa9.0xfe",
    "169.0xfe.0251.254",
    "169.254.169.254.",
    "0xa9fea9fe.",
]


@pytest.mark.parametrize("host", [h for h in METADATA_SPELLINGS if not h.endswith(".")])
def test_spellings_of_the_metadata_address_read_as_the_resolver_reads_them(host: str) -> None:
    resolved = socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    assert resolved == "169.254.169.254"
    assert str(resolver_address(host)) == resolved


@pytest.mark.parametrize("host", [*METADATA_SPELLINGS, "[::ffff:169.254.169.254]", "[fe80::1]"])
def test_spellings_of_a_denied_address_are_422_at_definition(api: Api, host: str) -> None:
    before = api.counts()
    response = api.client.post(
        "/jobs", json={**SEED, "handlerData": f"http://{host}/latest/"}, headers=api.admin
    )
    assert "denied network" in refused(response, "handlerData")
    assert api.counts() == before


def test_definition_and_execution_refuse_the_same_spellings(tmp_path: Path) -> None:
    """Loopback denied: each spelling of 127.0.0.1 is refused when defined and when run."""
    settings = load_settings(http_deny_networks="127.0.0.0/8")
    with hostile_server() as served:
        port = served.url.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "0x7f.1", "2130706433", "0177.0.0.1", "127.1", "127.0.0.1."):
            url = f"http://{host}:{port}/small"
            with pytest.raises(JobFailed, match="denied"):
                asyncio.run(http_request(settings, url))
            (tmp_path / host).mkdir()
            for api in make_api(tmp_path / host, http_deny_networks="127.0.0.0/8"):
                response = api.client.post("/jobs", json={**SEED, "handlerData": url}, headers=api.admin)
                assert "denied network" in refused(response, "handlerData")
        assert served.requests == []  # nothing reached the server
        # Without the deny entry the same spellings do reach it.
        asyncio.run(http_request(load_settings(), f"http://0x7f.1:{port}/small"))
        assert len(served.requests) == 1


def test_a_custom_deny_list_adds_to_the_built_in_one(tmp_path: Path) -> None:
    settings = load_settings(http_deny_networks="10.0.0.0/8")
    assert set(ALWAYS_DENIED_NETWORKS) <= set(settings.http_deny_networks)
    assert "10.0.0.0/8" in settings.http_deny_networks
    assert set(ALWAYS_DENIED_NETWORKS) <= set(load_settings(http_deny_networks="[]").http_deny_networks)
    for api in make_api(tmp_path, http_deny_networks="10.0.0.0/8"):
        for host in (
            "[fd00:ec2::254]",
            "100.100.100.200",
            "169.254.169.254",
            "[fe80::a9fe:a9fe]",
            "10.1.2.3",
        ):
            response = api.client.post(
                "/jobs", json={**SEED, "handlerData": f"http://{host}/"}, headers=api.admin
            )
            assert "denied network" in refused(response, "handlerData"), host
        assert api.counts() == (0, 0)


# --- 10.12: bodies are UTF-8, ids are plain decimal ------------------------------------------


def test_a_body_that_is_not_utf8_is_422(api: Api) -> None:
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        response = api.client.post(
            "/jobs",
            content=json.dumps(SEED).encode(encoding),
            headers={**api.admin, "Content-Type": "application/json"},
        )
        assert "UTF-8" in refused(response, "body"), encoding
    latin1 = json.dumps({**SEED, "name": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    refused(
        api.client.post("/jobs", content=latin1, headers={**api.admin, "Content-Type": "application/json"}),
        "body",
    )
    assert api.counts() == (0, 0)


@pytest.mark.parametrize("spelling", ["1.0", "01", "%2B1", "+1", "1e0", "%201", "0x1", "\uff11"])
def test_ids_are_plain_decimal(api: Api, spelling: str) -> None:
    job_id = api.create_seed()
    assert job_id == 1
    response = api.client.get(f"/jobs/{spelling}", headers=api.admin)
    assert "decimal" in refused(response, response.json()["detail"][0]["field"])
    assert response.json()["detail"][0]["field"] in ("job_id", "jobId")
    runs = api.client.get(f"/runs/{spelling}", headers=api.admin)
    assert runs.status_code == 422
    assert api.client.get("/jobs/1", headers=api.admin).status_code == 200


def test_after_id_beyond_64_bits_is_422_naming_after_id(api: Api) -> None:
    for value in (str(2**64), str(2**63), "9" * 40):
        response = api.client.get(f"/dashboard/jobs?afterId={value}", headers=api.admin)
        refused(response, "afterId")
    for name in ("beforeId", "jobId"):
        refused(api.client.get(f"/runs?{name}={2**64}", headers=api.admin), name)
    assert api.client.get(f"/dashboard/jobs?afterId={2**63 - 1}", headers=api.admin).status_code == 200
