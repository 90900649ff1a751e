"""Pictures on the wire: a real ChatOpenAI against the local OpenAI-compatible server. The request carries
each picture as an `image_url` content part where it sat (the format OpenAI and Azure accept); an endpoint
that refuses image input gets people a clear sentence, once asked and then remembered; VISION_MODEL."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from agent.settings.config import Settings
from tests import media_files
from tests.conftest import SECRET, app_credentials, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.test_media_app import exchange, file_message, picture_message, rich_message
from tests.waiting import wait_until

REFUSAL = {
    "error": {
        "message": "Invalid content type. image_url is only supported by certain models.",
        "type": "invalid_request_error",
        "param": "messages.[1].content.[1].type",
        "code": None,
    }
}


@pytest.fixture
def vision_settings(
    real_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> Callable[..., Settings]:
    """A real ChatOpenAI on the local OpenAI server, the app's credentials on the local DingTalk."""

    def build(**overrides: Any) -> Settings:
        return real_settings(embedding_provider="local", **{**app_credentials(fake_dingtalk), **overrides})

    return build


def chat_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The answers asked for (memory extraction asks the same endpoint: its requests are left out)."""
    asked = [r.json() for r in fake.chats()]
    return [r for r in asked if "<memories>" in str(r["messages"][0]["content"])]


def image(part: dict[str, Any]) -> Image.Image:
    url = part["image_url"]["url"]
    assert url.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_pictures_go_to_the_model_as_content_parts_where_they_sat(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("old", media_files.picture(1200, 800, "PNG"))
    fake_dingtalk.add_file("new", media_files.picture(3200, 1600, "JPEG"))
    fake_openai.script.append(Scripted(text="新版的按钮移到了右上角。"))
    parts = [
        {"text": "左边是旧版"},
        {"downloadCode": "old", "type": "picture"},
        {"text": "右边是新版，哪里不一样？"},
        {"downloadCode": "new", "type": "picture"},
    ]
    with serve(vision_settings()) as app:
        said = exchange(app, fake_dingtalk, rich_message(fake_dingtalk, parts))
    assert said == "新版的按钮移到了右上角。"
    [request] = chat_requests(fake_openai)
    last = request["messages"][-1]
    assert last["role"] == "user"
    content = last["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text", "image_url"]
    assert (content[0]["text"], content[2]["text"]) == ("左边是旧版", "右边是新版，哪里不一样？")
    assert (image(content[1]).format, image(content[1]).size) == ("PNG", (1200, 800))
    assert (image(content[3]).format, image(content[3]).size) == ("JPEG", (1600, 800))  # IMAGE_MAX_EDGE
    assert all(isinstance(m["content"], str) for m in request["messages"][:-1])  # the rest stays text


def test_an_endpoint_that_refuses_pictures_gets_a_clear_sentence_once_and_text_keeps_working(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    fake_openai.script.append(Scripted(status=400, body=REFUSAL))
    fake_openai.script.append(Scripted(text="可以，文字没问题。"))
    with serve(vision_settings()) as app:
        first = exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
        second = exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
        text = exchange(app, fake_dingtalk, rich_message(fake_dingtalk, [{"text": "那文字呢？"}]))
        health = app.client.get("/readyz")
    sentence = (
        "当前配置的模型看不了图片。请用文字描述图片里的内容，或请管理员换用支持图片的模型（VISION_MODEL）。"
    )
    assert first == sentence
    assert second == sentence
    assert text == "可以，文字没问题。"
    requests = chat_requests(fake_openai)
    assert len(requests) == 2  # the second picture was not sent: the refusal was remembered
    assert isinstance(requests[1]["messages"][-1]["content"], str)
    assert len(fake_dingtalk.posts("/v1.0/robot/messageFiles/download")) == 1  # nor fetched again
    assert health.status_code == 200  # a model without eyes is not a failing endpoint


def test_model_supports_images_false_never_fetches_or_sends_a_picture(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    fake_openai.script.append(Scripted(text="好的，我看看文字。"))
    parts = [{"text": "看下这个"}, {"downloadCode": "p", "type": "picture"}]
    with serve(vision_settings(model_supports_images="false")) as app:
        alone = exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
        with_words = exchange(app, fake_dingtalk, rich_message(fake_dingtalk, parts))
    assert alone.startswith("当前配置的模型看不了图片")
    assert with_words.startswith("当前配置的模型看不了图片")  # said first, then the words are answered
    assert with_words.endswith("好的，我看看文字。")
    assert fake_dingtalk.posts("/v1.0/robot/messageFiles/download") == []
    [request] = chat_requests(fake_openai)
    assert request["messages"][-1]["content"] == "看下这个[图片]"


def test_vision_model_answers_the_turns_with_pictures(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    with serve(vision_settings(vision_model="qwen-vl-max")) as app:
        exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
        exchange(app, fake_dingtalk, rich_message(fake_dingtalk, [{"text": "谢谢"}]))
    assert [r["model"] for r in chat_requests(fake_openai)] == ["qwen-vl-max", "gpt-4-turbo"]


def test_a_picture_question_streams_into_an_ai_card(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    fake_openai.script.append(Scripted(text="这是一个空指针异常：第 12 行的 user 为 None。"))
    settings = vision_settings(dingtalk_card_template_id="tpl.schema")
    parts = [{"text": "这个报错什么意思？"}, {"downloadCode": "p", "type": "picture"}]
    with serve(settings) as app:
        app.post_callback(encode(rich_message(fake_dingtalk, parts)), signed_headers(SECRET))
        wait_until(lambda: any(name == "finish" for name, _ in fake_dingtalk.card_calls()), what="the card")
    [request] = chat_requests(fake_openai)
    assert request["stream"] is True
    assert [p["type"] for p in request["messages"][-1]["content"]] == ["text", "image_url"]
    finish = next(body for name, body in fake_dingtalk.card_calls() if name == "finish")
    assert finish["cardData"]["cardParamMap"]["content"] == "这是一个空指针异常：第 12 行的 user 为 None。"


def test_a_refused_picture_still_gets_its_words_answered(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    fake_openai.script.append(Scripted(status=400, body=REFUSAL))
    fake_openai.script.append(Scripted(text="日志说数据库连接超时。"))
    parts = [{"text": "日志里写的什么？"}, {"downloadCode": "p", "type": "picture"}]
    with serve(vision_settings()) as app:
        said = exchange(app, fake_dingtalk, rich_message(fake_dingtalk, parts))
    assert said.startswith("当前配置的模型看不了图片。")
    assert said.endswith("日志说数据库连接超时。")
    second = chat_requests(fake_openai)[1]["messages"][-1]["content"]
    assert second == "日志里写的什么？[图片]"  # the same turn, the picture a mark


def test_a_bad_picture_is_not_taken_for_a_model_without_eyes(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    """ "Invalid image" is about this picture, not about the model: pictures stay on for everyone."""
    fake_dingtalk.add_file("p", media_files.picture(640, 480, "PNG"))
    bad = {"error": {"message": "Invalid image: could not process image", "type": "invalid_request_error"}}
    fake_openai.script.append(Scripted(status=400, body=bad))
    fake_openai.script.append(Scripted(text="看到了。"))
    with serve(vision_settings()) as app:
        first = exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
        second = exchange(app, fake_dingtalk, picture_message(fake_dingtalk, "p"))
    assert "看不了图片" not in first
    assert second == "看到了。"
    sent_again = chat_requests(fake_openai)[1]["messages"][-1]["content"]
    assert [part["type"] for part in sent_again] == ["image_url", "text"]  # the picture, then what is asked


def test_a_picture_sent_as_a_file_is_not_shown_when_pictures_are_off(
    vision_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.add_file("orig", media_files.picture(640, 480, "PNG"))
    with serve(vision_settings(model_supports_images="false")) as app:
        said = exchange(app, fake_dingtalk, file_message(fake_dingtalk, "orig", "IMG_0001.png"))
    assert said.startswith("当前配置的模型看不了图片")
    assert chat_requests(fake_openai) == []  # nothing else to answer: the model was not asked
