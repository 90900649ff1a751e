"""The real ChatOpenAI / AzureChatOpenAI over real HTTP against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest
from langchain_core.messages import HumanMessage
from pydantic import SecretStr

from agent.messages import IncomingMessage
from agent.model.factory import build_chat_model
from agent.settings.config import Settings
from tests.assistants import open_assistant, person_message
from tests.conftest import OPENAI_KEY as KEY
from tests.fakes.openai_server import FakeOpenAI, Scripted

MESSAGE = person_message("你好")


def answer(settings: Settings, message: IncomingMessage = MESSAGE) -> str:
    async def go() -> str:
        async with open_assistant(settings) as assistant:
            return (await assistant.reply(message)).text

    return asyncio.run(go())


def test_plain_completion_is_the_servers_text(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.append(Scripted(text="来自本地模型的回答"))
    assert answer(real_settings(openai_model="llama2")) == "来自本地模型的回答"
    [request] = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json()
    assert body["model"] == "llama2"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "你好"


def test_streamed_completion_arrives_in_pieces(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.append(Scripted(text="一二三四五六"))
    model = build_chat_model(real_settings(), mock_reply_template="")

    async def stream() -> list[str]:
        return [str(chunk.content) async for chunk in model.astream([HumanMessage("hi")])]

    pieces = [p for p in asyncio.run(stream()) if p]
    assert pieces == ["一二", "三四", "五六"]
    assert fake_openai.requests[0].json()["stream"] is True


@pytest.mark.parametrize(
    ("scripted", "expected", "fix"),
    [
        (Scripted(status=401, error_code="invalid_api_key"), "拒绝了认证", "check OPENAI_API_KEY"),
        (Scripted(status=403), "没有使用这个模型的权限", "permissions"),
        (Scripted(status=404, error_code="model_not_found"), "模型不存在", "/models"),
        (Scripted(status=429, error_code="rate_limit_exceeded"), "请求过于频繁", "rate limiting"),
        (Scripted(status=429, error_code="insufficient_quota"), "额度已用完", "balance"),
        (Scripted(status=500), "服务端错误", "failed on its side"),
        (Scripted(status=503), "服务端错误", "failed on its side"),
        (Scripted(status=400, error_code="invalid_request_error"), "消息太长", "refused the request"),
    ],
)
def test_each_http_failure_gets_the_right_message(
    real_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    scripted: Scripted,
    expected: str,
    fix: str,
) -> None:
    fake_openai.script.append(scripted)
    assert expected in answer(real_settings())
    assert fix in caplog.text
    assert KEY not in caplog.text


def test_a_prompt_too_long_for_the_context_is_retried_once_shorter_then_suggests_reset(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.extend(
        [
            Scripted(status=400, error_code="context_length_exceeded"),
            Scripted(text="短一点就能回答"),
            Scripted(status=400, error_code="context_length_exceeded"),
            Scripted(status=400, error_code="context_length_exceeded"),
        ]
    )

    async def go() -> list[str]:  # one event loop: the model's HTTP client lives in it
        async with open_assistant(real_settings()) as assistant:
            return [(await assistant.reply(MESSAGE)).text, (await assistant.reply(MESSAGE)).text]

    first, second = asyncio.run(go())
    assert first == "短一点就能回答"
    assert second.startswith("抱歉，这段对话太长")
    assert "/reset" in second
    assert len(fake_openai.chats()) == 4  # each message tried twice at most


def test_timeout_gets_the_timeout_message(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.script.append(Scripted(hold=threading.Event()))  # answers only when the test ends
    assert answer(real_settings(openai_timeout=0.3)) == "抱歉，模型服务响应超时，请稍后再试一次。"
    assert "raise OPENAI_TIMEOUT (now 0.3 s" in caplog.text


def test_refused_connection_gets_the_connection_message(
    real_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = answer(real_settings(openai_api_base=f"http://127.0.0.1:{port}/v1"))
    assert text == "抱歉，暂时连接不上模型服务，请稍后再试。"  # no alerts set up: nobody is said to be told
    assert f"connection refused by 127.0.0.1:{port}: nothing listens there" in caplog.text
    assert f"Fix: start the server at 127.0.0.1:{port}, or correct the port in OPENAI_API_BASE" in caplog.text


def test_retries_recover_from_a_transient_500(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script.extend([Scripted(status=500), Scripted(text="重试后成功")])
    assert answer(real_settings(openai_max_retries=2)) == "重试后成功"
    assert len(fake_openai.requests) == 2


def test_azure_deployments_path_and_api_key_header(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI, azure_host: str
) -> None:
    fake_openai.script.append(Scripted(text="Azure 的回答"))
    settings = real_settings(
        openai_api_base=f"http://{azure_host}:{fake_openai.port}/", openai_model="my-gpt4o"
    )
    assert answer(settings) == "Azure 的回答"
    [request] = fake_openai.requests
    assert request.path == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers


def test_azure_v1_path_uses_plain_openai_client(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI, azure_host: str
) -> None:
    fake_openai.script.append(Scripted(text="v1 的回答"))
    settings = real_settings(
        openai_api_base=f"http://{azure_host}:{fake_openai.port}/openai/v1/", openai_model="dep"
    )
    assert answer(settings) == "v1 的回答"
    [request] = fake_openai.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json()["model"] == "dep"


def test_azure_model_not_found_explains_deployment_names(
    real_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    azure_host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.script.append(Scripted(status=404, error_code="DeploymentNotFound"))
    settings = real_settings(
        openai_api_base=f"http://{azure_host}:{fake_openai.port}/", openai_model="gpt-4o"
    )
    assert "模型不存在" in answer(settings)
    assert "OPENAI_MODEL is the deployment name" in caplog.text


def test_factory_gives_the_key_as_a_secret(real_settings: Callable[..., Settings]) -> None:
    model = build_chat_model(real_settings(), mock_reply_template="")
    assert KEY not in repr(model)
    assert isinstance(model.openai_api_key, SecretStr)  # type: ignore[attr-defined]
