"""`dingbot simulate --image / --file`: the one-shot fake DingTalk also serves the bytes, through the robot
file API, to the real service (mock model) running under uvicorn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import media_files
from tests.test_simulate import Service, same_settings, service, simulate_cli

__all__ = ["same_settings", "service"]  # the fixtures, shared with tests/test_simulate.py


def test_pictures_and_files_are_served_to_the_service_from_the_one_shot_fake(
    same_settings: Service, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shot, weekly = tmp_path / "shot.png", tmp_path / "周报.pdf"
    shot.write_bytes(media_files.picture(1280, 720))
    weekly.write_bytes(
        media_files.pdf(["第一页：本周完成了登录模块", "第二页：下周上线", "第三页：风险是人手不足"])
    )
    assert simulate_cli("这个报错什么意思？", "--image", str(shot), "--user", "media-user") == 0
    out = capsys.readouterr().out
    assert (
        out.splitlines()[0]
        == "media-user (media-user) → 小钉, one-to-one: 这个报错什么意思？ [图片 shot.png]"
    )
    assert "收到 1 张 1280×720 的 PNG 图片和 1 段文字" in out
    assert simulate_cli("--file", str(weekly), "--user", "media-user") == 0
    assert "收到文件《周报.pdf》（PDF，3 页，" in capsys.readouterr().out
    assert simulate_cli("风险是什么？", "--user", "media-user") == 0
    out = capsys.readouterr().out
    assert "收到文件《周报.pdf》" in out  # kept for the conversation's next question
    assert "「风险是什么？」" in out


def test_a_file_with_words_is_refused_with_what_to_do(
    same_settings: Service, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    weekly = tmp_path / "w.pdf"
    weekly.write_bytes(media_files.pdf(["x"]))
    assert simulate_cli("总结一下", "--file", str(weekly)) == 2
    err = capsys.readouterr().err
    assert "DingTalk sends a file on its own" in err
    assert "ask about it in the next simulate" in err
