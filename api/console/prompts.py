"""The console's prompts pages: the files in prompts/ and the group overrides, editing with validation (a
broken edit is refused with the loader's message and nothing is written), a playground that renders the
exact prompt for a sample message and may send it to the model, and the prompt regression cases."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from agent.errors import PromptError
from agent.model.errors import classify_model_error
from agent.model.mock import content_text
from agent.prompts.cases import load_cases, run_cases
from agent.prompts.playground import (
    HISTORY_SEPARATOR,
    Sample,
    check_edit,
    editable_files,
    parse_history,
    render_sample,
    write_prompt,
)
from api.console.routes import AuditDep, ConsoleRoute, FormDep, GuardDep, SessionDep, address_of, page, when
from api.deps import ServicesDep

router = APIRouter(prefix="/console/prompts", route_class=ConsoleRoute, include_in_schema=False)
_saving = asyncio.Lock()
MAX_PROMPT_BYTES = 256 * 1024  # a prompt file larger than this is a mistake (and a slow page)


@router.get("")
async def prompt_files_page(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, saved: str = ""
) -> Response:
    library = services.assistant.prompts
    await asyncio.to_thread(library.refresh)
    groups = library.group_files()
    files = []
    for name, path in editable_files(library.folder).items():
        stat = path.stat()
        files.append(
            {
                "name": name,
                "size": stat.st_size,
                "changed": when(stat.st_mtime, services.settings.timezone),
                "conversations": ", ".join(groups.get(name, ())),
            }
        )
    return page(
        request,
        "prompts.html",
        guard,
        session,
        files=files,
        version=library.version,
        problems=library.problems,
        saved=saved,
    )


def _file(services: Any, name: str) -> Any:
    path = editable_files(services.assistant.prompts.folder).get(name)
    if path is None:
        raise HTTPException(404, f"no prompt file {name!r} in the prompts folder")
    return path


@router.get("/edit")
async def edit_form(
    request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep, file: str = ""
) -> Response:
    path = _file(services, file)
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    return page(request, "prompt_edit.html", guard, session, file=file, text=text, error="")


@router.post("/edit")
async def save(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    file: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
) -> Response:
    library = services.assistant.prompts
    path = _file(services, file)
    text = text.replace("\r\n", "\n")  # browsers send a textarea's lines with CRLF
    if len(text.encode("utf-8")) > MAX_PROMPT_BYTES:
        error = (
            f"文件太大（超过 {MAX_PROMPT_BYTES // 1024} KB）。The file is over {MAX_PROMPT_BYTES // 1024} KB."
        )
    else:
        try:
            async with _saving:  # one edit checked and written at a time: two good ones cannot break together
                await asyncio.to_thread(check_edit, library.folder, file, text)
                await asyncio.to_thread(write_prompt, path, text)
        except PromptError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"写不进去 · cannot write {file}: {exc.strerror}"
        else:
            await asyncio.to_thread(library.refresh)  # the very next message uses it
            await audit.record("prompt_saved", address_of(request), file)
            return RedirectResponse(f"/console/prompts?saved={file}", 303)
    response = page(request, "prompt_edit.html", guard, session, file=file, text=text, error=error)
    response.status_code = 422
    return response


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@router.get("/playground")
async def playground_form(request: Request, guard: GuardDep, session: SessionDep) -> Response:
    return page(request, "playground.html", guard, session, form={}, separator=HISTORY_SEPARATOR)


@router.post("/playground")
async def playground(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
    audit: AuditDep,
    message: Annotated[str, Form()] = "",
    speaker: Annotated[str, Form()] = "张三",
    group: Annotated[str, Form()] = "",
    conversation_id: Annotated[str, Form()] = "",
    history: Annotated[str, Form()] = "",
    memories: Annotated[str, Form()] = "",
    send: Annotated[str, Form()] = "",
) -> Response:
    settings = services.settings
    form = {
        "message": message,
        "speaker": speaker,
        "group": group,
        "conversation_id": conversation_id,
        "history": history,
        "memories": memories,
        "send": bool(send),
    }
    error = answer = ""
    rendered = None
    try:
        sample = Sample(
            message=message.replace("\r\n", "\n"),
            speaker=speaker.strip(),
            group=group.strip(),
            conversation_id=conversation_id.strip(),
            history=parse_history(history),
            memories=_lines(memories),
        )
        rendered = await render_sample(
            settings, services.assistant.prompts, sample, datetime.now(settings.timezone)
        )
    except PromptError as exc:
        error = str(exc)
    if rendered is not None and rendered.messages and send:
        await audit.record("playground_sent", address_of(request), settings.openai_model)  # it costs tokens
        try:
            said = await asyncio.wait_for(
                services.assistant.model.ainvoke(rendered.messages), settings.openai_timeout
            )
            answer = content_text(said)
        except Exception as exc:  # shown, not raised: the author learns why the model did not answer
            failure = classify_model_error(exc, settings)
            error = f"{failure.cause_zh} · {failure.cause}"
    return page(
        request,
        "playground.html",
        guard,
        session,
        form=form,
        separator=HISTORY_SEPARATOR,
        rendered=rendered,
        answer=answer,
        error=error,
    )


@router.post("/cases")
async def cases(
    request: Request,
    guard: GuardDep,
    session: FormDep,
    services: ServicesDep,
) -> Response:
    folder = services.assistant.prompts.folder
    error = ""
    results: list[Any] = []
    try:
        results = await run_cases(folder, await asyncio.to_thread(load_cases, folder))
    except PromptError as exc:
        error = str(exc)
    passed = sum(result.passed for result in results)
    return page(request, "cases.html", guard, session, results=results, passed=passed, error=error)
