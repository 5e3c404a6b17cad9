"""SGLang's HTTP API as the stand-in engine serves it (devtools.standin_engine), and PD's bootstrap.

Response shapes are SGLang's: /generate returns `text` and `meta_info` (`id`, `finish_reason`,
`prompt_tokens`, `completion_tokens`, ...); the OpenAI routes return OpenAI's objects; streaming is
SSE `data:` lines ending with `data: [DONE]`. Each `meta_info` also carries `stand_in`: which pod,
group and role answered, and in PD mode which prefill pod handed over which bootstrap room.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from devtools.standin_args import Engine, disclaimer, prompt_of, prompt_tokens, say, words

ROOM_WAIT_SECONDS = 30.0


def bootstrap_app(engine: Engine) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def room(request: web.Request) -> web.Response:
        number = int(request.match_info["room"])
        entry = engine.rooms.get(number)
        if entry is None:
            return web.json_response({"error": f"no room {number} on {engine.pod}"}, status=404)
        entry["fetched_by"] = request.query.get("decode_pod", "?")
        engine.fetched.setdefault(number, asyncio.Event()).set()
        return web.json_response(entry)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/stand-in/rooms/{room}", room)
    return app


async def prefill_room(engine: Engine, room: int, prompt_tokens: int) -> dict[str, Any]:
    """Register the room, wait for a decode server to fetch it, and return what was handed over."""
    entry = {"room": room, "prefill_pod": engine.pod, "prompt_tokens": prompt_tokens, "fetched_by": None}
    engine.rooms[room] = entry
    event = engine.fetched.setdefault(room, asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), ROOM_WAIT_SECONDS)
    except TimeoutError as exc:
        raise RuntimeError(f"no decode server fetched bootstrap room {room} within {ROOM_WAIT_SECONDS:.0f} s") from exc
    finally:
        engine.fetched.pop(room, None)
        engine.rooms.pop(room, None)
    return entry


async def decode_room(engine: Engine, host: str, port: int | None, room: int) -> dict[str, Any]:
    """Fetch the prefill side's entry for `room` from its bootstrap server."""
    port = port or int(engine.args["--disaggregation-bootstrap-port"])
    deadline = time.monotonic() + ROOM_WAIT_SECONDS
    last = "not tried"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            ip = engine.resolve(host)
            if ip is None:
                last = f"{host} does not resolve"
            else:
                url = f"http://{ip}:{port}/stand-in/rooms/{room}"
                try:
                    async with session.get(url, params={"decode_pod": engine.pod}) as response:
                        if response.status == 200:
                            entry: dict[str, Any] = await response.json()
                            return entry
                        last = f"{url}: HTTP {response.status}"
                except (aiohttp.ClientError, OSError) as exc:
                    last = f"{url}: {exc}"
            await asyncio.sleep(0.05)
    raise RuntimeError(f"bootstrap room {room} not found at {host}:{port} within {ROOM_WAIT_SECONDS:.0f} s ({last})")


# ------------------------------------------------------------------------------------------------
# The API
# ------------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _max_tokens(body: dict[str, Any], openai: bool, default: int) -> int:
    # As SGLang: /generate reads sampling_params.max_new_tokens only (GenerateReqInput has no
    # top-level max_new_tokens; SamplingParams defaults to 128); the OpenAI routes read max_tokens.
    sampling = body.get("sampling_params") or {}
    for value in (
        sampling.get("max_new_tokens"),
        body.get("max_completion_tokens") if openai else None,
        body.get("max_tokens") if openai else None,
    ):
        if value is not None:
            return max(0, int(value))
    return default


async def _pd_handover(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
    """The PD part of a request: prefill registers and waits, decode fetches; {} when not in PD."""
    mode = engine.args.mode
    if mode == "null":
        return {}
    room, host = body.get("bootstrap_room"), body.get("bootstrap_host")
    if not isinstance(room, int) or not isinstance(host, str):
        raise web.HTTPBadRequest(
            text=json.dumps(
                {"error": {"message": f"a {mode} server needs bootstrap_host and an integer bootstrap_room"}}
            ),
            content_type="application/json",
        )
    if mode == "prefill":
        entry = await prefill_room(engine, room, prompt_tokens(prompt_of(body)))
        return {"bootstrap_room": room, "prefill_pod": engine.pod, "decode_pod": entry["fetched_by"]}
    port = body.get("bootstrap_port")
    entry = await decode_room(engine, host, int(port) if port is not None else None, room)
    return {"bootstrap_room": room, "prefill_pod": entry["prefill_pod"], "decode_pod": engine.pod}


def _answer(
    engine: Engine, body: dict[str, Any], count: int, handover: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    prompt = prompt_of(body)
    # A prefill server computes the KV cache; the tokens come from the decode side.
    produced = (
        [] if engine.args.mode == "prefill" else words(prompt, count, disclaimer(engine.pod, engine.group, engine.role))
    )
    meta = {
        "id": uuid.uuid4().hex,
        "finish_reason": {"type": "length", "length": len(produced)},
        "prompt_tokens": prompt_tokens(prompt),
        "completion_tokens": len(produced),
        "cached_tokens": 0,
        "stand_in": {
            "pod": engine.pod,
            "group": engine.group,
            "role": engine.role,
            "sglang_flags": engine.args.version,
            **handover,
        },
    }
    return produced, meta


def _openai_object(kind: str, engine: Engine, meta: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": meta["id"],
        "object": kind,
        "created": int(time.time()),
        "model": engine.args.model_name,
        "choices": [{"index": 0, **choice}],
        "usage": {
            "prompt_tokens": meta["prompt_tokens"],
            "completion_tokens": meta["completion_tokens"],
            "total_tokens": meta["prompt_tokens"] + meta["completion_tokens"],
        },
        "stand_in": meta["stand_in"],
    }


async def _sse(request: web.Request, events: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    async for event in events:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _route(engine: Engine, kind: str) -> Handler:
    """/generate ("generate"), /v1/completions ("completion") or /v1/chat/completions ("chat")."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if not engine.healthy():
            return web.json_response({"error": {"message": "the group has not assembled"}}, status=503)
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(prompt_of(body), str) or isinstance(body.get("text"), list):
            return web.json_response({"error": {"message": "stand-in: one prompt per request"}}, status=400)
        engine.requests += 1
        say(f"{request.path} from {request.remote}: fields {', '.join(sorted(body))}")
        try:
            handover = await _pd_handover(engine, body)
        except RuntimeError as exc:
            say(f"{request.path}: {exc}")
            return web.json_response({"error": {"message": str(exc)}}, status=500)
        default = {"generate": 128, "completion": 16, "chat": 128}[kind]
        produced, meta = _answer(engine, body, _max_tokens(body, kind != "generate", default), handover)
        say(f"{request.path}: {len(produced)} words, {handover or 'no PD'}")
        text = " ".join(produced)
        if not body.get("stream"):
            if kind == "generate":
                return web.json_response({"text": text, "meta_info": meta})
            choice: dict[str, Any]
            if kind == "completion":
                choice = {"text": text, "finish_reason": "length", "logprobs": None}
                return web.json_response(_openai_object("text_completion", engine, meta, choice))
            choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            return web.json_response(_openai_object("chat.completion", engine, meta, choice))
        return await _sse(request, _stream(engine, kind, produced, meta))

    return handle


async def _stream(
    engine: Engine, kind: str, produced: list[str], meta: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    chunk_kind = "chat.completion.chunk" if kind == "chat" else "text_completion"
    for i, word in enumerate(produced):
        last = i == len(produced) - 1
        if kind == "generate":  # SGLang streams the text so far, each time
            info = {**meta, "completion_tokens": i + 1, "finish_reason": meta["finish_reason"] if last else None}
            yield {"text": " ".join(produced[: i + 1]), "meta_info": info, "index": 0}
            continue
        piece = word if i == 0 else " " + word
        choice: dict[str, Any]
        if kind == "chat":
            delta: dict[str, Any] = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
            choice = {"delta": delta, "finish_reason": None}
        else:
            choice = {"text": piece, "finish_reason": None}
        yield {**_openai_object(chunk_kind, engine, meta, choice), "usage": None}
    if kind == "generate":
        if not produced:
            yield {"text": "", "meta_info": meta, "index": 0}
        return
    end: dict[str, Any] = {"delta": {}} if kind == "chat" else {"text": ""}
    yield _openai_object(chunk_kind, engine, meta, {**end, "finish_reason": "length"})


def build_api(engine: Engine, health_only: bool = False) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200 if engine.healthy() else 503)

    async def model_info(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": engine.args["--model-path"],
                "tokenizer_path": engine.args["--model-path"],
                "is_generation": True,
                "stand_in": True,
            }
        )

    async def server_info(_: web.Request) -> web.Response:
        flags = (
            "--host",
            "--port",
            "--nnodes",
            "--node-rank",
            "--tp-size",
            "--disaggregation-mode",
            "--disaggregation-bootstrap-port",
            "--served-model-name",
            "--model-path",
        )
        info = {f[2:].replace("-", "_"): engine.args[f] for f in flags}
        return web.json_response(
            {**info, "version": f"stand-in (flags of SGLang {engine.args.version})", "stand_in": True}
        )

    async def models(_: web.Request) -> web.Response:
        card = {
            "id": engine.args.model_name,
            "object": "model",
            "created": int(engine.started),
            "owned_by": "sglang",
            "root": engine.args.model_name,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def metrics(_: web.Request) -> web.Response:
        labels = f'model_name="{engine.args.model_name}",stand_in="true"'
        text = f"# TYPE sglang:num_requests_total counter\nsglang:num_requests_total{{{labels}}} {engine.requests}\n"
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    if health_only:
        return app
    app.router.add_get("/get_model_info", model_info)
    app.router.add_get("/model_info", model_info)
    app.router.add_get("/get_server_info", server_info)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/generate", _route(engine, "generate"))
    app.router.add_post("/v1/completions", _route(engine, "completion"))
    app.router.add_post("/v1/chat/completions", _route(engine, "chat"))
    return app
