"""One writer per embedded data dir: a second server or worker on the same SQLite data dir is
refused with a clear message; on PostgreSQL several processes share the registry."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from service.cli import main
from service.container import Container
from service.errors import DataDirInUse
from service.settings import Settings
from tests.test_cli import runner  # noqa: F401  (the fixture)
from tests.test_postgres import postgres_url  # noqa: F401  (the fixture)


def test_a_second_server_on_the_data_dir_is_refused(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as first:
        assert first.get("/v1/info").status_code == 200
        second = Container(settings)
        with pytest.raises(DataDirInUse, match=rf"pid {os.getpid()}\).*PostgreSQL"):
            second.prepare()
        second.close()
        assert first.get("/v1/info").status_code == 200  # the first is untouched
    again = Container(settings)  # released when the first stopped
    again.prepare()
    again.close()


def test_a_worker_beside_an_embedded_server_is_refused(
    runner: CliRunner,  # noqa: F811
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    settings = make_settings(data_dir=Settings().data_dir)  # the runner's environment
    with start_app(settings):
        result = runner.invoke(main, ["worker"])
    assert result.exit_code == 1
    assert "only one process may serve a data dir" in result.output


def test_several_workers_need_postgres(runner: CliRunner) -> None:  # noqa: F811
    result = runner.invoke(main, ["serve", "--workers", "2"])
    assert result.exit_code == 2 and "needs PostgreSQL" in result.output


@pytest.mark.postgres
def test_processes_share_a_postgres_registry(
    postgres_url: str,  # noqa: F811
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(database_url=postgres_url)
    first, second = Container(settings), Container(settings)
    first.prepare()
    second.prepare()
    first.close()
    second.close()
