"""`dingbot doctor`'s model checks, over real HTTP against the local fakes: the exact cause and fix for
each mistake, the exit code, `--json`, and no secret in any output."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from agent.diagnostics.checks import Status, mask
from agent.diagnostics.model import check_key
from agent.settings.config import Settings
from tests.doctor.helpers import AZURE_KEY, EMBEDDING, KEY, SECRETS, doctor, statuses
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.servers import FakeDingTalk


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
    assert states.pop("tools.mcp") == "skip"  # no MCP_CONFIG
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
    # skipped: the robot webhook (not asked), Stream (http), MCP (none)
    assert "OK: 13 passed, 0 warning(s), 3 skipped" in text


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
