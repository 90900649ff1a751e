"""`dingbot doctor` over real HTTP against the local fakes: the exact cause and fix for each mistake of the
user guide's troubleshooting list, the exit code, `--json`, and no secret in any output."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.diagnostics import memory as diagnostics_memory
from agent.diagnostics.checks import Status, mask
from agent.diagnostics.model import check_key
from agent.memory.store import held_by_another_process
from agent.settings.config import Settings
from dingbot.cli import main
from tests.conftest import serve
from tests.fakes.gateway import CLIENT_ID as GATEWAY_CLIENT_ID
from tests.fakes.gateway import CLIENT_SECRET as GATEWAY_CLIENT_SECRET
from tests.fakes.gateway import FakeGateway
from tests.fakes.servers import FakeDingTalk, FakeOpenAI

KEY = "sk-test-Zq8vN3xR5tW1yB7dK2mP9s7f2a"
AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SECRETS = {
    "SECRET": "SECsigning-secret-0123456789abcdef",
    "ACCESS_TOKEN": "robot-access-token-5678abcd",
    "DINGTALK_CLIENT_SECRET": "app-secret-ABCDEFGH12345678",
}
EMBEDDING = "text-embedding-3-small"
DEFAULT_TEMPORARY_ROOTS = diagnostics_memory.TEMPORARY_ROOTS


@pytest.fixture(autouse=True)
def lasting_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's tmp_path is under /tmp, which the doctor rightly refuses; one test puts the rule back."""
    monkeypatch.setattr(diagnostics_memory, "TEMPORARY_ROOTS", ())


@pytest.fixture
def start_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def start(models: tuple[str, ...] = ("gpt-4-turbo", EMBEDDING), **options: Any) -> FakeOpenAI:
        server = FakeOpenAI(models, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_dingtalk: FakeDingTalk) -> Callable[..., None]:
    def apply(**values: str) -> None:
        """The defaults (first call), then `values`; a later call changes only what it names."""
        defaults = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_TIMEOUT": "5",
            "DATABASE_PATH": str(tmp_path / "data" / "bot.db"),
            "SECRET": SECRETS["SECRET"],
            "DINGTALK_OAPI_BASE": fake_dingtalk.url,
            "DINGTALK_API_BASE": fake_dingtalk.url,
        }
        for name, value in ({} if applied else defaults).items():
            monkeypatch.setenv(name, value)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        applied.append(True)

    applied: list[bool] = []
    return apply


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """Run `dingbot doctor`; (exit code, stdout, checks by name when --json). No secret may be printed."""
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    for secret in (KEY, AZURE_KEY, *SECRETS.values()):
        assert secret not in out
        assert secret not in err
    checks = {c["name"]: c for c in json.loads(out)["checks"]} if "--json" in args else {}
    return code, out, checks


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def test_healthy_setup_passes_every_check_and_exits_zero(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    fake_dingtalk: FakeDingTalk,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_openai(api_key=KEY, v1_only=True, known_models_only=True)  # as strict as OpenAI
    env(
        OPENAI_API_BASE=f"{server.url}/v1",
        ACCESS_TOKEN=SECRETS["ACCESS_TOKEN"],
        DINGTALK_CLIENT_ID="dingappkey",
        DINGTALK_CLIENT_SECRET=SECRETS["DINGTALK_CLIENT_SECRET"],
    )
    code, out, checks = doctor(capsys, "--json", "--send-test-message")
    assert code == 0, out
    states = statuses(checks)
    assert states.pop("dingtalk.stream") == "skip"  # DINGTALK_MODE=http: no gateway to check
    assert set(states.values()) == {"ok"}
    assert json.loads(out)["ok"] is True
    assert checks["model.key"]["detail"].startswith("sk-…7f2a")
    assert checks["model.completion"]["elapsed_ms"] is not None
    assert checks["memory.embeddings"]["detail"].startswith(f"{EMBEDDING!r}: 64 dims in ")
    [chat] = server.chats()
    assert chat.path == "/v1/chat/completions"
    assert chat.json()["max_completion_tokens"] == 1  # one token
    [robot] = fake_dingtalk.posts("/robot/send")
    assert "sign=" in robot.path
    assert "timestamp=" in robot.path
    assert fake_dingtalk.tokens_issued == 1

    code, text, _ = doctor(capsys)  # the same, for people
    assert code == 0
    assert "✓ one-token chat completion · 单 token 对话补全: answered in" in text
    assert "✗" not in text
    assert "OK: 12 passed, 0 warning(s), 2 skipped" in text  # the robot webhook (not asked), Stream (http)


def test_wrong_key_is_named_with_its_fix(
    start_openai: Callable[..., FakeOpenAI], env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_openai(api_key="sk-the-right-key-0000000000000000")
    env(OPENAI_API_BASE=f"{server.url}/v1")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    auth = checks["model.auth"]
    assert auth["status"] == "fail"
    assert auth["cause"] == f"authentication: HTTP 401 (invalid_api_key) from {server.url}/v1"
    assert auth["fix"].startswith("check OPENAI_API_KEY is complete and current")
    assert auth["cause_zh"].startswith("认证失败")
    assert auth["fix_zh"].startswith("检查 OPENAI_API_KEY 是否完整且有效")
    for later in ("model.listed", "model.completion", "memory.embeddings"):
        assert checks[later]["status"] == "skip"
        assert checks[later]["cause"] == "the key was refused"
    assert server.chats() == []  # nothing more was tried with a refused key


def test_base_url_without_v1_is_named_with_the_right_url(
    start_openai: Callable[..., FakeOpenAI], env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_openai(v1_only=True)
    env(OPENAI_API_BASE=server.url)
    code, out, checks = doctor(capsys, "--json")
    assert code == 1
    listed = checks["model.listed"]
    assert listed["status"] == "fail"
    assert listed["cause"] == (
        f"{server.url}/models answers HTTP 404, but {server.url}/v1/models is the API: "
        "OPENAI_API_BASE is wrong (it lacks /v1)"
    )
    assert listed["fix"] == f"set OPENAI_API_BASE={server.url}/v1"
    assert "缺少 /v1" in listed["cause_zh"]
    assert checks["model.endpoint"]["status"] == "ok"  # it is reachable: only the path is wrong
    # the embeddings are not blamed for the wrong path
    assert checks["memory.embeddings"]["status"] == "skip"
    assert "EMBEDDING_PROVIDER=local" not in out


def test_model_name_that_does_not_exist_gets_the_listed_names(
    start_openai: Callable[..., FakeOpenAI], env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_openai(("gpt-4-turbo", "gpt-4o-mini", EMBEDDING), known_models_only=True)
    env(OPENAI_API_BASE=f"{server.url}/v1", OPENAI_MODEL="gpt-4-trubo")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    listed = checks["model.listed"]
    assert listed["status"] == "fail"
    assert listed["cause"].startswith(f"model 'gpt-4-trubo' does not exist at {server.url}/v1")
    assert listed["fix"].startswith("set OPENAI_MODEL to a listed model, e.g. gpt-4-turbo")
    assert listed["fix_zh"].startswith("把 OPENAI_MODEL 设为列表中的模型，例如 gpt-4-turbo")
    completion = checks["model.completion"]
    assert completion["status"] == "fail"
    assert completion["cause"] == f"model_not_found: HTTP 404 (model_not_found) from {server.url}/v1"
    assert checks["memory.embeddings"]["status"] == "ok"  # the embedding model exists


def test_azure_model_name_instead_of_deployment_name_is_named(
    start_openai: Callable[..., FakeOpenAI],
    env: Callable[..., None],
    azure_host: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_openai(("gpt-4o", EMBEDDING), api_key=AZURE_KEY, deployments=("my-gpt4o", "my-embed"))
    base = f"http://{azure_host}:{server.port}/"
    env(OPENAI_API_BASE=base, OPENAI_API_KEY=AZURE_KEY, OPENAI_MODEL="gpt-4o", EMBEDDING_MODEL="my-embed")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    deployment = checks["model.listed"]
    assert deployment["title"] == "deployment 'gpt-4o' answers"
    assert deployment["status"] == "fail"
    assert deployment["cause"] == (
        "deployment 'gpt-4o' does not exist on this Azure resource: 'gpt-4o' is a model name, "
        "not a deployment name"
    )
    assert deployment["fix"].startswith("on Azure OPENAI_MODEL is the deployment name you chose")
    assert "不是模型名称" in deployment["fix_zh"]
    assert "(DeploymentNotFound)" in checks["model.completion"]["cause"]
    assert checks["model.auth"]["status"] == "ok"  # the api-key header was right
    assert checks["memory.embeddings"]["status"] == "ok"

    env(OPENAI_MODEL="my-gpt4o")  # the deployment's name: everything answers
    code, out, checks = doctor(capsys, "--json")
    assert code == 0, out
    assert checks["model.listed"]["status"] == "ok"
    assert server.chats()[-1].path == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"


def test_unreachable_base_is_named_and_later_checks_say_why_they_were_skipped(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    env(OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1")
    code, _out, checks = doctor(capsys, "--json")
    assert code == 1
    endpoint = checks["model.endpoint"]
    assert endpoint["status"] == "fail"
    assert endpoint["cause"] == (
        f"connection: could not connect to http://127.0.0.1:{port}/v1: connection refused by "
        f"127.0.0.1:{port}: nothing listens there"
    )
    assert endpoint["fix"] == (
        f"start the server at 127.0.0.1:{port}, or correct the port in OPENAI_API_BASE (ollama serve / vLLM)"
    )
    assert endpoint["cause_zh"] == (
        f"连接失败：无法连接到 http://127.0.0.1:{port}/v1：127.0.0.1:{port} 拒绝连接：该端口没有服务在监听"
    )
    for later in ("model.auth", "model.listed", "model.completion", "memory.embeddings"):
        assert checks[later]["status"] == "skip"
        assert checks[later]["cause"] == "the base URL is not reachable"
        assert checks[later]["cause_zh"] == "接口地址不可达"
    assert checks["storage.database"]["status"] == "ok"  # the rest is still checked

    code, text, _ = doctor(capsys)
    assert "✗ base URL reachable · 接口地址可达" in text
    assert "skipped, same reason · 跳过，原因同上" in text


def test_a_base_that_never_answers_is_a_timeout_of_the_check_not_of_openai_timeout(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as silent:  # takes connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env(OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1", OPENAI_TIMEOUT="1")
        code, _, checks = doctor(capsys, "--json")
    assert code == 1
    endpoint = checks["model.endpoint"]
    assert endpoint["cause"] == f"timeout: GET http://127.0.0.1:{port}/v1/models did not answer within 1 s"
    assert "OPENAI_TIMEOUT" not in endpoint["fix"]  # raising it would change nothing here


def test_a_host_name_that_does_not_resolve_is_called_a_dns_failure(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name server is the process boundary here: it answers "no such name" for the typo."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("api.openai.con", b"api.openai.con"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    env(OPENAI_API_BASE="https://api.openai.con/v1", OPENAI_API_KEY="sk-" + "a" * 40)
    code, _text, checks = doctor(capsys, "--json")
    assert code == 1
    endpoint = checks["model.endpoint"]
    assert endpoint["cause"] == (
        "connection: could not connect to https://api.openai.con/v1: the host name 'api.openai.con' "
        "does not resolve (DNS)"
    )
    assert endpoint["fix"].startswith("check the host name in OPENAI_API_BASE for typos")
    assert "域名 'api.openai.con' 无法解析（DNS）" in endpoint["cause_zh"]
    assert "from" not in endpoint["cause"]


def test_endpoint_without_embeddings_is_told_to_use_the_local_embedder(
    start_openai: Callable[..., FakeOpenAI], env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_openai(("llama3",))
    server.embeddings = False  # like many vLLM and Ollama setups
    env(OPENAI_API_BASE=f"{server.url}/v1", OPENAI_MODEL="llama3", OPENAI_API_KEY="local")
    code, _, checks = doctor(capsys, "--json")
    assert code == 1
    embeddings = checks["memory.embeddings"]
    assert embeddings["status"] == "fail"
    assert embeddings["cause"].startswith(
        f"the endpoint gives no embeddings for EMBEDDING_MODEL='{EMBEDDING}'"
    )
    assert embeddings["fix"].startswith("set EMBEDDING_PROVIDER=local")
    assert embeddings["fix_zh"].startswith("设置 EMBEDDING_PROVIDER=local")
    assert checks["model.completion"]["status"] == "ok"
    assert checks["memory.dims"]["status"] == "skip"

    env(EMBEDDING_PROVIDER="local")  # the advice works
    code, _, checks = doctor(capsys, "--json")
    assert code == 0
    assert checks["memory.embeddings"]["detail"].startswith("the bundled offline embedder")


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


def test_key_plausibility_for_each_provider() -> None:
    def key(base: str, value: str) -> tuple[Status, str]:
        settings = Settings(_env_file=None, openai_api_key=value, openai_api_base=base)  # type: ignore[call-arg]
        check = check_key(settings)
        return check.status, check.cause

    openai, azure, local = (
        "https://api.openai.com/v1",
        "https://r.openai.azure.com/",
        "http://localhost:11434/v1",
    )
    assert key(openai, "sk-proj-0123456789abcdef")[0] is Status.OK
    assert key(openai, "0123456789abcdef0123") == (
        Status.FAIL,
        "OPENAI_API_BASE is OpenAI's, but OPENAI_API_KEY does not start with sk-",
    )
    assert key(azure, AZURE_KEY)[0] is Status.OK
    assert key(azure, "sk-proj-0123456789abcdef")[0] is Status.WARN  # an OpenAI key on Azure
    assert key(local, "ollama")[0] is Status.OK  # any value works locally
    assert key(openai, "Bearer sk-proj-0123456789")[0] is Status.FAIL
    for placeholder in (
        "sk-xxx",
        "sk-your-api-key-here",
        "your_api_key",
        "<your-azure-key>",
        "sk-xxx-yyy-zzz",
    ):
        status, cause = key(openai if placeholder.startswith("sk-") else azure, placeholder)
        assert status is Status.FAIL, placeholder
        assert cause.startswith("OPENAI_API_KEY is a placeholder from an example"), placeholder
    assert key(local, "your_key")[0] is Status.OK  # a local server takes any value, placeholders too
    compatible = "https://llm.example.com/v1"
    for real in ("mykey-7f2a9c0d1e", "my-vllm-token-2024", "myriad-4f2a9b", "sk-xxxxRealKeyABC123"):
        assert key(compatible, real)[0] is Status.OK, real  # starts like a placeholder, is not one
    assert key(openai, "sk-proj-0123456789 ")[0] is Status.FAIL


def test_mask_shows_at_most_the_last_four_characters() -> None:
    assert mask("sk-proj-abcdefghijklmnop7f2a") == "sk-…7f2a"
    assert mask("0f1e2d3c4b5a69788796a5b4c3d2e1f0") == "…e1f0"
    assert mask("local") == "<5 chars>"


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
