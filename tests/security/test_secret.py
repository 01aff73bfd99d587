"""Issue 10.1: the development secret published in the repository never verifies a token.

Every mode is tried: a SQLite file, a URI-form SQLite URL, an in-memory database, a shared
deployment (MariaDB), ``tickwork dev`` as a real process; a secret file that cannot be used
stops the command with exit 2 naming the file instead of falling back to anything.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import ROOT, tickwork_cmd
from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import Settings, load_settings
from tickwork.config.settings import PUBLISHED_AUTH_SECRET, resolve_auth_secret, sqlite_secret_path
from tickwork.errors import ConfigError
from tickwork.store.engine import make_engine, upgrade

pytestmark = pytest.mark.security


def forged(secret: str = PUBLISHED_AUTH_SECRET) -> dict[str, str]:
    """An admin token signed with the secret earlier versions published as their default."""
    now = int(time.time())
    token = jwt.encode({"sub": "mallory", "role": "admin", "iat": now, "exp": now + 600}, secret)
    return {"Authorization": f"Bearer {token}"}


def sqlite_urls(tmp_path: Path) -> dict[str, str]:
    return {
        "file": f"sqlite:///{tmp_path / 'plain.db'}",
        "uri": f"sqlite:///file:{tmp_path / 'uri.db'}?uri=true",
        "uri-mode": f"sqlite:///file:{tmp_path / 'mode.db'}?mode=rwc&uri=true",
        "memory": "sqlite:///:memory:",
        "uri-memory": "sqlite:///file::memory:?uri=true",
    }


@pytest.mark.parametrize("mode", ["file", "uri", "uri-mode", "memory", "uri-memory"])
def test_the_published_secret_is_refused_on_every_sqlite_form(tmp_path: Path, mode: str) -> None:
    url = sqlite_urls(tmp_path)[mode]
    if "memory" not in url:
        upgrade(url)
    engine = make_engine(url)
    try:
        app = create_app(load_settings(database_url=url, broker_url="memory://"), engine=engine)
        settings = app.state.tickwork.settings
        assert settings.auth_secret not in ("", PUBLISHED_AUTH_SECRET)
        with TestClient(app) as client:  # /openapi.json: any valid token, no table needed
            assert client.get("/openapi.json", headers=forged()).status_code == 401
            own = {"Authorization": f"Bearer {create_token(settings, 'admin')}"}
            assert client.get("/openapi.json", headers=own).status_code == 200
    finally:
        engine.dispose()
    path = sqlite_secret_path(url)
    if "memory" in mode:
        assert path is None  # a random secret for this process only
    else:
        # The per-database secret is written for the URI form too, private to its owner.
        assert path is not None and path.read_text().strip() == settings.auth_secret
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_in_memory_database_gets_a_new_random_secret_per_process() -> None:
    settings = load_settings(database_url="sqlite://", broker_url="memory://")
    first, second = resolve_auth_secret(settings), resolve_auth_secret(settings)
    assert len(first.auth_secret) >= 32 and first.auth_secret != second.auth_secret


def test_no_secret_means_no_token_is_signed_or_verified() -> None:
    settings = load_settings(database_url="sqlite://", broker_url="memory://")
    assert settings.auth_secret == ""  # there is no built-in secret to fall back to
    with pytest.raises(ConfigError) as refused:
        create_token(settings, "admin")
    assert refused.value.field == "TICKWORK_AUTH_SECRET"


def test_the_published_secret_cannot_be_configured() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth_secret=PUBLISHED_AUTH_SECRET)
    assert refused.value.field == "TICKWORK_AUTH_SECRET"
    assert "published" in refused.value.reason


def cli_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TICKWORK_DATABASE_URL"] = database_url
    env["TICKWORK_NAMESPACE"] = f"twsec{os.getpid()}"
    env.update({f"TICKWORK_{k.upper()}": v for k, v in extra.items()})
    return env


def unusable_secret_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(what, database path) for each way a ``<db>.secret`` can be unusable."""
    for what in ("directory", "empty", "short", "not utf-8", "dangling symlink", "published"):
        db = tmp_path / f"{what.replace(' ', '-')}.db"
        secret = Path(f"{db}.secret")
        if what == "directory":
            secret.mkdir()
        elif what == "empty":
            secret.write_text("")
        elif what == "short":
            secret.write_text("tooshort\n")
        elif what == "not utf-8":
            secret.write_bytes(b"\xff\xfe" + b"\x00secret" * 8)
        elif what == "dangling symlink":
            secret.symlink_to(tmp_path / "nowhere" / "secret")
        else:
            secret.write_text(PUBLISHED_AUTH_SECRET + "\n")
        yield what, db


def test_an_unusable_secret_file_stops_token_and_dev_with_exit_2(tmp_path: Path) -> None:
    for what, db in unusable_secret_files(tmp_path):
        for url in (f"sqlite:///{db}", f"sqlite:///file:{db}?uri=true"):
            # `tickwork dev` too for two of the cases (each start costs a second of CPU).
            dev = what in ("directory", "not utf-8")
            for command in (("token", "--role", "admin"), *((("dev", "--port", "0"),) if dev else ())):
                result = subprocess.run(
                    tickwork_cmd(*command),
                    check=False,
                    env=cli_env(tmp_path, url),
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                label = f"{what} / {url} / {command[0]}"
                assert result.returncode == 2, (label, result.stdout, result.stderr)
                assert result.stdout == "", label  # no token printed, no server started
                [line] = result.stderr.strip().splitlines()
                assert "TICKWORK_AUTH_SECRET" in line and f"{db}.secret" in line, (label, line)
                assert "Traceback" not in result.stderr


def test_tickwork_dev_on_a_uri_form_sqlite_url_refuses_the_published_secret(tmp_path: Path) -> None:
    url = f"sqlite:///file:{tmp_path / 'dev.db'}?uri=true"
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(
        tickwork_cmd("dev", "--port", "0"),
        env=cli_env(tmp_path, url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        api_url = token = ""
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline and not (api_url and token):
            line = process.stdout.readline()
            assert line, f"tickwork dev exited with {process.wait(5)}"
            if line.startswith("TICKWORK_URL="):
                api_url = line.strip().split("=", 1)[1]
            elif line.startswith("TICKWORK_TOKEN="):
                token = line.strip().split("=", 1)[1]
        assert api_url and token
        assert httpx.get(f"{api_url}/jobs", headers=forged(), timeout=10).status_code == 401
        mine = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api_url}/jobs", headers=mine, timeout=10).status_code == 200
        # `tickwork token` on the same URL signs with the same per-database secret.
        printed = subprocess.run(
            tickwork_cmd("token", "--role", "viewer"),
            env=cli_env(tmp_path, url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        viewer = {"Authorization": f"Bearer {printed}"}
        assert httpx.get(f"{api_url}/jobs", headers=viewer, timeout=10).status_code == 200
        assert (tmp_path / "dev.db.secret").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.integration
def test_a_shared_deployment_refuses_the_published_secret(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    app = create_app(cluster_settings, engine=mysql_engine)
    with TestClient(app) as client:
        assert client.get("/jobs", headers=forged()).status_code == 401
        own = {"Authorization": f"Bearer {create_token(cluster_settings, 'admin')}"}
        assert client.get("/jobs", headers=own).status_code == 200
    with pytest.raises(ConfigError) as refused:
        create_app(cluster_settings.model_copy(update={"auth_secret": ""}), engine=mysql_engine)
    assert refused.value.field == "TICKWORK_AUTH_SECRET"
