"""`dingbot doctor`'s memory, storage and DingTalk checks, over real HTTP against the local fakes: the
exact cause and fix for each mistake, the exit code, `--json`, and no secret in any output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.diagnostics import memory as diagnostics_memory
from agent.memory.store import held_by_another_process
from agent.settings.config import Settings
from tests.conftest import serve
from tests.doctor.helpers import DEFAULT_TEMPORARY_ROOTS, KEY, SECRETS, doctor
from tests.fakes.gateway import CLIENT_ID as GATEWAY_CLIENT_ID
from tests.fakes.gateway import CLIENT_SECRET as GATEWAY_CLIENT_SECRET
from tests.fakes.gateway import FakeGateway
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.servers import FakeDingTalk


def test_mock_mode_skips_the_model_and_still_checks_memory_storage_and_dingtalk(
    env: Callable[..., None], fake_dingtalk: FakeDingTalk, capsys: pytest.CaptureFixture[str]
) -> None:
    env(
        FORCE_MOCK_OPENAI="1",
        OPENAI_API_BASE="http://127.0.0.1:9/v1",  # would fail if anything tried it
        DINGTALK_CLIENT_ID="dingappkey",
        DINGTALK_CLIENT_SECRET=SECRETS["DINGTALK_CLIENT_SECRET"],
    )
    code, out, checks = doctor(capsys, "--json")
    assert code == 0, out
    for name in ("model.key", "model.endpoint", "model.auth", "model.listed", "model.completion"):
        assert checks[name]["status"] == "skip"
        assert checks[name]["cause"].startswith("mock mode (FORCE_MOCK_OPENAI=1)")
        assert checks[name]["cause_zh"].startswith("Mock 模式")
    assert checks["memory.embeddings"]["detail"].startswith("the bundled offline embedder")
    assert checks["memory.dims"]["status"] == "ok"
    assert checks["storage.database"]["status"] == "ok"
    assert checks["dingtalk.app"]["status"] == "ok"
    assert fake_dingtalk.tokens_issued == 1


def test_storage_under_a_temporary_folder_or_behind_a_file_fails(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(diagnostics_memory, "TEMPORARY_ROOTS", (tmp_path,))
    env(FORCE_MOCK_OPENAI="1")  # trying things out: a scratch folder is worth a warning, not a failure
    code, _, checks = doctor(capsys, "--json")
    assert code == 0
    assert checks["storage.database"]["status"] == "warn"
    assert checks["storage.database"]["cause"].startswith(
        f"{tmp_path / 'data' / 'bot.db'} is under {tmp_path}"
    )
    assert checks["storage.memory"]["status"] == "warn"

    server = start_openai()
    env(FORCE_MOCK_OPENAI="0", OPENAI_API_BASE=f"{server.url}/v1")  # a real model: real conversations
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    database = checks["storage.database"]
    assert database["cause"].startswith(f"{tmp_path / 'data' / 'bot.db'} is under {tmp_path}")
    assert (
        database["fix"]
        == "set DATABASE_PATH to a lasting place, e.g. DATABASE_PATH=/var/lib/dinghook/dingbot_memory.db"
    )
    assert checks["storage.memory"]["status"] == "fail"

    monkeypatch.setattr(diagnostics_memory, "TEMPORARY_ROOTS", ())
    (tmp_path / "afile").write_text("")
    env(DATABASE_PATH=str(tmp_path / "afile" / "bot.db"))
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    assert checks["storage.database"]["cause"].endswith(
        f"cannot be written by this user: {tmp_path / 'afile'} is a file, not a folder"
    )


def test_the_temporary_folders_are_tmp_and_its_kin() -> None:
    assert {Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")} <= set(DEFAULT_TEMPORARY_ROOTS)


def test_stored_dimension_comes_from_the_running_service_without_taking_its_folder(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "data" / "bot.db"
    server = start_openai()  # 64-dim embeddings
    env(OPENAI_API_BASE=f"{server.url}/v1", DATABASE_PATH=str(database))
    mock = make_settings(database_path=database)  # mock mode: the offline embedder, 512 dims
    with serve(mock) as app:
        assert held_by_another_process(mock)
        code, _, checks = doctor(capsys, "--json", "--url", app.url)
        dims = checks["memory.dims"]
        assert code == 1
        assert dims["detail"] == "stored 512 dims (the running service's /readyz), embedder 64"
        assert dims["cause"] == (
            f"the stored memories in {database.parent / 'bot_store'} have 512-dim vectors but the embedder "
            "gives 64: the service will refuse to start with these settings"
        )
        assert dims["fix"] == (
            "set EMBEDDING_PROVIDER/EMBEDDING_MODEL back to what wrote them, or move that folder away"
        )
        # the service still owns its folder and answers
        assert held_by_another_process(mock)
        assert app.client.get("/readyz").json()["embedding_dims"] == 512

    code, _, checks = doctor(capsys, "--json")  # no service: Qdrant's meta.json, read without opening
    assert checks["memory.dims"]["detail"] == "stored 512 dims (meta.json), embedder 64"
    env(EMBEDDING_PROVIDER="local")
    code, out, checks = doctor(capsys, "--json")
    assert code == 0, out
    assert checks["memory.dims"]["detail"] == "stored 512 dims (meta.json), embedder 512"


def test_robot_webhook_is_only_tried_when_asked_and_a_refusal_names_the_signature(
    env: Callable[..., None], fake_dingtalk: FakeDingTalk, capsys: pytest.CaptureFixture[str]
) -> None:
    env(FORCE_MOCK_OPENAI="1", ACCESS_TOKEN=SECRETS["ACCESS_TOKEN"])
    code, _, checks = doctor(capsys, "--json")
    assert code == 0
    assert checks["dingtalk.robot"]["status"] == "skip"
    assert "--send-test-message" in checks["dingtalk.robot"]["cause"]
    assert fake_dingtalk.posts("/robot/send") == []  # nothing was sent

    fake_dingtalk.robot_errcodes.append(310000)
    code, _, checks = doctor(capsys, "--json", "--send-test-message")
    assert code == 1
    robot = checks["dingtalk.robot"]
    assert robot["cause"].startswith("DingTalk refused the test message: errcode 310000")
    assert "set DINGTALK_ROBOT_SECRET (or SECRET) to the SEC... secret" in robot["fix"]
    assert "加签" in robot["fix_zh"]


def test_refused_app_credentials_name_the_variables(
    env: Callable[..., None], fake_dingtalk: FakeDingTalk, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_dingtalk.token_statuses.append(400)
    env(FORCE_MOCK_OPENAI="1", DINGTALK_CLIENT_ID="dingappkey", DINGTALK_CLIENT_SECRET="wrong-secret-000000")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    app = checks["dingtalk.app"]
    assert app["cause"].startswith("access token refused: HTTP 400 invalidClientSecret")
    assert app["fix"].startswith("check DINGTALK_CLIENT_ID (AppKey) and DINGTALK_CLIENT_SECRET (AppSecret)")


def test_no_secret_is_a_problem_outside_mock_mode(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env(FORCE_MOCK_OPENAI="1")
    monkeypatch.delenv("SECRET")
    code, _, checks = doctor(capsys, "--json")
    assert (code, checks["dingtalk.secret"]["status"]) == (0, "warn")
    server = start_openai()
    env(FORCE_MOCK_OPENAI="0", OPENAI_API_BASE=f"{server.url}/v1")
    code, _, checks = doctor(capsys, "--json")
    assert (code, checks["dingtalk.secret"]["status"]) == (1, "fail")
    assert checks["dingtalk.secret"]["cause"].endswith("every callback is refused with 401")


def test_invalid_settings_exit_2_with_the_variable_and_its_fix(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    env(PORT="eighty")
    code, _out, checks = doctor(capsys, "--json")
    assert code == 2
    assert list(checks) == ["settings.valid"]
    assert checks["settings.valid"]["cause"].startswith("PORT='eighty' is invalid")
    assert "PORT=8080" in checks["settings.valid"]["cause"]


def test_no_secret_is_ever_printed_in_text_or_json(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    fake_dingtalk: FakeDingTalk,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_openai(api_key=KEY)
    fake_dingtalk.robot_errcodes.append(310000)
    fake_dingtalk.token_statuses.append(400)
    env(
        OPENAI_API_BASE=f"{server.url}/v1",
        ACCESS_TOKEN=SECRETS["ACCESS_TOKEN"],
        DINGTALK_CLIENT_ID="dingappkey",
        DINGTALK_CLIENT_SECRET=SECRETS["DINGTALK_CLIENT_SECRET"],
    )
    for args in (["--json", "--send-test-message"], ["--send-test-message"]):
        fake_dingtalk.robot_errcodes.append(310000)
        fake_dingtalk.token_statuses.append(400)
        _, out, _ = doctor(capsys, *args)  # asserts that no secret is in stdout or stderr
        assert "sk-…7f2a" in out  # the key is recognisable by its last 4 characters only
        assert "SECRET …cdef" in out
    env(OPENAI_API_KEY="sk-wrong-key-0000000000000000")  # refused: still not printed
    _, out, _ = doctor(capsys)
    assert "sk-wrong-key-0000000000000000" not in out
    assert "sk-…0000" in out


def test_stream_mode_checks_that_the_gateway_opens_a_connection_for_the_credentials(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = FakeGateway().start()
    try:
        env(
            FORCE_MOCK_OPENAI="1",
            DINGTALK_MODE="stream",
            DINGTALK_CLIENT_ID=GATEWAY_CLIENT_ID,
            DINGTALK_CLIENT_SECRET=GATEWAY_CLIENT_SECRET,
            DINGTALK_API_BASE=gateway.url,
        )
        code, _, checks = doctor(capsys, "--json")
        assert checks["dingtalk.stream"]["status"] == "ok"
        assert checks["dingtalk.stream"]["detail"].startswith("endpoint ws://127.0.0.1:")
        gateway.refuse_credentials = True
        code, out, checks = doctor(capsys, "--json")
    finally:
        gateway.stop()
    assert code == 1
    stream = checks["dingtalk.stream"]
    assert stream["status"] == "fail"
    assert "gateway refused the credentials" in stream["cause"]
    assert "Stream" in stream["fix"]
    assert GATEWAY_CLIENT_SECRET not in out


@pytest.mark.postgres_only
def test_the_doctor_checks_the_database_server_and_the_chroma_server(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path
) -> None:
    from agent.storage.migrate import MIGRATIONS
    from tests.chroma import chroma_server, free_port

    env(FORCE_MOCK_OPENAI="1", DATABASE_URL=database_url, CHROMA_URL=f"http://127.0.0.1:{free_port()}")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    assert checks["storage.database"]["status"] == "ok"
    versions = len(list((MIGRATIONS / "versions").glob("0*.py")))
    assert checks["storage.database"]["detail"].endswith(f": schema new, {versions} to apply")
    assert checks["memory.dims"]["status"] == "fail"
    assert checks["memory.dims"]["cause"].startswith("the Chroma server at http://127.0.0.1:")
    with chroma_server(tmp_path / "chroma") as url:
        env(CHROMA_URL=url, DATABASE_URL=database_url.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}"))
        code, _, checks = doctor(capsys, "--json")
    assert checks["memory.dims"]["status"] == "ok"  # nothing stored there yet
    assert checks["storage.database"]["status"] == "fail"
    assert (
        "the database server does not answer: start it, or check DATABASE_URL"
        in checks["storage.database"]["fix"]
    )
    assert code == 1
