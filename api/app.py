"""The FastAPI application. `create_app(settings)` does no work; the lifespan builds and closes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from agent.assembly import open_agent
from agent.model.health import ModelState
from agent.settings.choices import DingTalkMode
from agent.settings.config import Settings
from agent.tools.mcp import McpServers
from api.alerts import OperatorAlerts, ServiceObserver
from api.delivery.courier import Courier
from api.delivery.dispatcher import Dispatcher
from api.delivery.housekeeping import PeriodicCheck
from api.delivery.inbox import Inbox
from api.delivery.intake import Reception, take_in_stream
from api.delivery.outbox import Outbox
from api.delivery.recovery import StorageRecovery
from api.delivery.reminders import ReminderClock, ReminderReach
from api.dingtalk.cards import CardSender
from api.dingtalk.files import ChannelFiles, DingTalkFiles
from api.dingtalk.openapi import AccessTokens, OpenApiSender
from api.dingtalk.robot_webhook import RobotWebhookSender
from api.dingtalk.sender import SessionWebhookSender
from api.dingtalk.stream import StreamConnection
from api.front.passing import PeerFromFront
from api.metrics import Metrics
from api.routes import dingtalk, health
from api.services import Services

log = logging.getLogger(__name__)

# Third-party loggers that print request URLs (a session webhook URL is a credential) or message text at
# INFO. Raised when an app is created, whoever configured logging (the server, a test, a tool).
# openai 3.x logs through its vendored copies, httpx2 and httpcore2.
QUIET_LOGGERS = (
    *("httpx", "httpcore", "httpx2", "httpcore2", "openai", "langchain_openai"),
    *("mem0", "websockets", "alembic"),  # alembic: agent/storage/migrate.py says what ran
    "mcp",  # the MCP SDK logs session ids and, on a failed post, the server's URL
)

SHUTDOWN_GRACE_SECONDS = 10.0
SEND_TIMEOUT_SECONDS = 10.0  # one request to DingTalk (its OpenAPI answers 504 itself after 3 s)


def _warn_about_authentication(settings: Settings) -> None:
    if settings.callback_secret is not None or settings.dingtalk_outgoing_token is not None:
        return
    if settings.mock_mode:
        log.warning(
            "no SECRET (or DINGTALK_CLIENT_SECRET / DINGTALK_OUTGOING_TOKEN) is set: accepting UNSIGNED "
            "callbacks because mock mode is on; set SECRET before exposing this service"
        )
    else:
        log.warning(
            "no SECRET (or DINGTALK_CLIENT_SECRET / DINGTALK_OUTGOING_TOKEN) is set: every callback will "
            "be refused with 401 until SECRET is set to the robot's signing secret"
        )


def _access_tokens(settings: Settings, http: httpx.AsyncClient) -> AccessTokens | None:
    """The app's OpenAPI access token (one cache for sends, cards and downloads), when it has credentials."""
    if not settings.dingtalk_client_id or settings.dingtalk_client_secret is None:
        files = (
            "pictures and files come only from local tools on this machine (mock mode: dingbot simulate)"
            if settings.mock_mode
            else "pictures and files cannot be fetched (people are told an admin must add them)"
        )
        log.info(
            "DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET not set: no OpenAPI fallback for expired webhooks, "
            "and %s",
            files,
        )
        return None
    return AccessTokens(
        http,
        api_base=settings.dingtalk_api_base,
        client_id=settings.dingtalk_client_id,
        client_secret=settings.dingtalk_client_secret,
    )


def _build_courier(
    settings: Settings,
    http: httpx.AsyncClient,
    webhook: SessionWebhookSender,
    tokens: AccessTokens | None,
    outbox: Outbox,
    observer: ServiceObserver,
) -> tuple[Courier, CardSender | None]:
    openapi = cards = None
    if tokens is not None:
        openapi = OpenApiSender(http, tokens, api_base=settings.dingtalk_api_base)
        if settings.card_replies and settings.dingtalk_card_template_id:
            cards = CardSender(
                http,
                tokens,
                api_base=settings.dingtalk_api_base,
                template_id=settings.dingtalk_card_template_id,
            )
    robot = None
    if settings.access_token is not None:
        robot = RobotWebhookSender(
            http,
            oapi_base=settings.dingtalk_oapi_base,
            access_token=settings.access_token,
            secret=settings.dingtalk_robot_secret or settings.secret,
        )
    if settings.dingtalk_card_template_id and not settings.card_replies:
        log.info(
            "DINGTALK_CARD_TEMPLATE_ID is set but cards are off (DINGTALK_REPLY_STYLE or app credentials)"
        )
    courier = Courier(
        outbox=outbox,
        webhook=webhook,
        openapi=openapi,
        robot=robot,
        cards=cards,
        metrics=observer.metrics,
        retry_base_seconds=_retry_base(settings),
        observer=observer,
        # Longer than any one send (webhook, token, OpenAPI fallback: SEND_TIMEOUT_SECONDS each), and
        # at least the lease another replica waits out before it takes over a message.
        claim_seconds=max(settings.claim_lease_seconds, 4 * SEND_TIMEOUT_SECONDS),
    )
    return courier, cards


def _retry_base(settings: Settings) -> float:
    """First retry delay: 5 s, or sooner when the periodic check runs more often than that."""
    return min(5.0, settings.check_interval_seconds)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    http = httpx.AsyncClient(timeout=httpx.Timeout(SEND_TIMEOUT_SECONDS, connect=5.0))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_stopped)
        stack.push_async_callback(http.aclose)
        metrics = Metrics(settings.longest_answer_seconds)
        observer = ServiceObserver(metrics)
        mcp = None
        if settings.mcp_config is not None:  # a file that is not an MCP config stops startup in one line
            mcp = McpServers.from_file(
                settings.mcp_config,
                settings.tool_timeout_seconds,
                retry_base_seconds=settings.check_interval_seconds,  # a failed one is tried again from then
            )
            stack.push_async_callback(mcp.stop)
            await mcp.start()  # each ready or failed (one warning): the service starts either way
        tokens = _access_tokens(settings, http)
        dingtalk_files = None
        if tokens is not None:
            dingtalk_files = DingTalkFiles(
                http,
                tokens,
                api_base=settings.dingtalk_api_base,
                robot_code=settings.dingtalk_robot_code or settings.dingtalk_client_id or "",
                timeout_seconds=settings.media_timeout_seconds,
            )
        files = ChannelFiles(
            http, dingtalk_files, mock_mode=settings.mock_mode, timeout_seconds=settings.media_timeout_seconds
        )
        agent = await stack.enter_async_context(
            open_agent(
                settings, observer=observer, reachability=ReminderReach(settings), mcp=mcp, media=files
            )
        )
        database, assistant, memory, history = (
            agent.database,
            agent.assistant,
            agent.memory,
            agent.history,
        )
        if memory is None:  # open_agent builds it unless told not to
            raise RuntimeError("the service needs the memory service")
        inbox = Inbox(database, lease_seconds=settings.claim_lease_seconds)
        outbox = Outbox(database)
        webhook = SessionWebhookSender(SEND_TIMEOUT_SECONDS, connect_timeout=5.0)
        stack.push_async_callback(webhook.aclose)
        courier, cards = _build_courier(settings, http, webhook, tokens, outbox, observer)
        alerts = OperatorAlerts(settings=settings, courier=courier, prompts=agent.prompts)
        observer.attach(alerts)  # problems met while opening (memory) are told now
        stack.push_async_callback(alerts.close)
        dispatcher = Dispatcher(
            assistant=assistant,
            inbox=inbox,
            outbox=outbox,
            courier=courier,
            workers=settings.workers,
            default_robot_code=settings.dingtalk_robot_code or settings.dingtalk_client_id or "",
            cards=cards,
            answer_deadline_seconds=settings.longest_answer_seconds,
        )
        reminders = ReminderClock(
            book=agent.reminders,
            database=database,
            courier=courier,
            prompts_for=assistant.prompts_for,
            settings=settings,
            observer=observer,
        )
        metrics.track_in_flight(lambda: dispatcher.in_flight)
        metrics.track_outbox(lambda: courier.pending)
        health = assistant.health
        metrics.track_model(lambda: float(health.status.state in (ModelState.OK, ModelState.MOCK)))
        check = PeriodicCheck(
            inbox=inbox,
            outbox=outbox,
            history=history,
            dispatcher=dispatcher,
            courier=courier,
            interval_seconds=settings.check_interval_seconds,
            retention_days=settings.retention_days,
            retry_after_seconds=_retry_base(settings),
            limiter=assistant.limiter,
            model=health,
            memory=memory,
            reminders=reminders,
            mcp=mcp,
            files=assistant.media.files,
        )
        services = Services(settings, database, assistant, dispatcher, memory, check, metrics, courier)
        services.reminders, services.mcp = reminders, mcp
        if settings.uses_stream:
            services.stream = StreamConnection(
                settings=settings,
                http=http,
                on_message=functools.partial(take_in_stream, services),
                metrics=metrics,
            )
        app.state.services = services
        app.state.reception = Reception(
            settings, dispatcher, storage_ok=lambda: database.health.ok, count=metrics.callback
        )
        metrics.track_database(lambda: float(database.health.ok))
        recovery = StorageRecovery(
            database=database,
            dispatcher=dispatcher,
            courier=courier,
            parked=services.parked,
            retake=functools.partial(take_in_stream, services),
        )
        # Before the first callback is accepted: on SQLite every `processing` row belongs to a process that
        # is gone; on a shared database only those whose claim expired (another replica may be answering).
        await dispatcher.resume(all_processing=database.single_owner, retry_after_seconds=0.0)
        await memory.resume_learning()  # answered before a crash, not learned from yet
        if not settings.mock_mode:  # in the background: startup does not wait on the endpoint, the log
            # says what it found. Started before the periodic check, which then finds it under way.
            model_check = asyncio.create_task(health.check("startup check"), name="model-check")
            stack.push_async_callback(_cancel, model_check)
            probe = asyncio.create_task(asyncio.to_thread(assistant.context.probe), name="context-probe")
            stack.push_async_callback(_cancel, probe)
        renewal = asyncio.create_task(dispatcher.keep_claims(settings.claim_lease_seconds / 3), name="claims")
        stack.push_async_callback(_cancel, renewal)
        check.start()  # its first run, at once, sends replies a previous run left unsent
        reminders.start()  # fires at once what fell due while the service was down
        stack.push_async_callback(reminders.stop)
        recovery.start()
        stack.push_async_callback(recovery.stop)
        if services.stream is not None:
            await services.stream.start()  # connects in the background: DingTalk's messages come after
            stack.push_async_callback(services.stream.stop)  # also when startup fails after this
        _warn_about_authentication(settings)
        if settings.mock_mode:
            log.info(
                "mock mode: callbacks sent from this machine may name a session webhook on it too "
                "(127.0.0.1, ::1, localhost): `dingbot simulate` and `dingbot catch` need no set-up"
            )
        if alerts.enabled:
            log.info("operator alerts go to the custom robot's group (ACCESS_TOKEN)")
        # Everything built so far lives as long as the service: frozen out of the collector's way, so a
        # full collection of a heap this size (the embedder, mem0, LangChain) no longer stalls the event
        # loop for 100+ ms. Full collections of what remains are made 10x rarer: with the frozen heap
        # uncounted they would otherwise run very often (measured: bench/stream_ack.py worst ack 156 ->
        # 11 ms; bench/delivery.py at 200/s ack p99 26-83 -> 31-37 ms; freezing alone made it 55-840 ms).
        gc.collect()
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        log.info(
            "DingHook ready: provider=%s model=%s database=%s",
            settings.provider.value,
            "mock" if settings.mock_mode else settings.openai_model,
            database.engine.where,
        )
        yield
        if services.stream is not None:
            await services.stream.stop()  # no new messages while the ones in flight finish
        await check.stop()
        await dispatcher.drain(SHUTDOWN_GRACE_SECONDS)


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _stopped() -> None:
    log.info("DingHook stopped")


def quiet_loggers() -> None:
    """QUIET_LOGGERS at WARNING at least, whoever configured logging (the service, the acking process)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def create_app(settings: Settings, *, front_token: str | None = None) -> FastAPI:
    """`front_token`: requests come through the acking process (api/front/), which names their client
    with this token."""
    quiet_loggers()
    app = FastAPI(title="DingHook", lifespan=_lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    if front_token is not None:
        app.add_middleware(PeerFromFront, token=front_token)
    app.include_router(health.router)
    if settings.console_password is not None:  # off otherwise: /console is a plain 404
        from api.console.mount import mount_console

        mount_console(app, settings)
    if settings.dingtalk_mode is not DingTalkMode.STREAM:  # stream: messages come only by the gateway
        app.include_router(dingtalk.router)
    return app
