"""An OpenAI-compatible HTTP server for a base causal LM and its FourierFT adapters, on Ray Serve.

Ray Serve carries the HTTP proxy, streaming responses, replicas and a Ray cluster past one machine; each replica's
engine batches continuously (scheduler.py: a request joins the running rows at the next decode step, up to
`max_batch_size` rows; the comparison backends, which have only generate, batch with `@serve.batch` instead). The
FastAPI ingress speaks OpenAI's API, with `model` naming the adapter (the base model by its own name):

    GET  /v1/models
    POST /v1/completions            {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"}
    POST /v1/chat/completions       {"model", "messages", ...}: the tokenizer's chat template
    POST /v1/load_lora_adapter      {"lora_name", "lora_path"}   (vLLM's names for loading an adapter at runtime)
    POST /v1/unload_lora_adapter    {"lora_name"}
    GET  /stats                     rows per decode step (how requests were batched), evictions, cancellations, pins
    GET  /health                    {"status": "ok"}, loading nothing

Request bodies are pydantic models (FastAPI validates them; /docs and /openapi.json describe them). Refusals are
OpenAI-style JSON errors with a 4xx status naming the problem. With an API key (--api-key, or FOURIERFT_API_KEY) every
route, /health and /docs included, answers 401 without `Authorization: Bearer <key>`. Loading and unloading at runtime
is off unless --allow-runtime-loading, and then reads only folders under the --adapter-root folders (links resolved,
`..` refused). Each replica loads the adapters given at start; a runtime load or unload reaches the replica that serves
it (with several replicas, give adapters at start).

fourierft-serve --base MODEL_FOLDER --adapter NAME=FOLDER [...] [--port 8000] [--replicas 1] [--api-key KEY]
(--address auto joins a running Ray cluster; the default starts one on this machine.)
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from ray import serve

from .engine import Engine
from .jobs import DONE, Failed, RequestError

DEFAULTS = {"max_batch_size": 16, "batch_wait_ms": 10.0, "memory_budget_mb": 1024.0, "dtype": "auto",
            "max_request_bytes": 1 << 20}
API_KEY_ENV = "FOURIERFT_API_KEY"


def error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "model_not_found" if "model" in message else "not_found", 409: "conflict"}.get(status)
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def digest(key: str) -> str:
    """What the replicas hold of the API key: its sha256, so the key itself never travels into Ray's state."""
    return hashlib.sha256(key.encode()).hexdigest()


app = FastAPI(title="fourierft server")
app.state.guard = {"api_key_sha256": None, "max_request_bytes": DEFAULTS["max_request_bytes"]}


@app.middleware("http")
async def guard(request: Request, call_next):
    """Every route: the API key first (where one is set), then the body's size."""
    settings = request.app.state.guard
    if settings["api_key_sha256"]:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest(given.strip()), settings["api_key_sha256"]):
            answer = error(401, "a valid API key is needed: send 'Authorization: Bearer <key>' (the key the server "
                                "was started with, --api-key or " + API_KEY_ENV + ")")
            answer.headers["WWW-Authenticate"] = "Bearer"
            return answer
    if request.method == "POST":
        size = request.headers.get("content-length")
        limit = settings["max_request_bytes"]
        if (size is not None and size.isdigit() and int(size) > limit) or len(await request.body()) > limit:
            return error(413, f"the request body is over this server's {limit:,} bytes (--max-request-bytes)")
    return await call_next(request)


@app.exception_handler(RequestError)
async def refused(request: Request, exc: RequestError) -> JSONResponse:
    return error(exc.status, str(exc))


@app.exception_handler(RequestValidationError)
async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation of the request models, as OpenAI's 400 with the fields named."""
    problems = exc.errors()
    kind = request.headers.get("content-type", "")
    if "json" not in kind:
        return error(400, f"the request body must be JSON sent with 'Content-Type: application/json' (this one was "
                          f"sent as {kind or 'no content type'})")
    if any(p.get("type") == "json_invalid" for p in problems):
        return error(400, f"the request body is not valid JSON ({problems[0].get('msg')})")
    named = "; ".join(f"{'.'.join(str(x) for x in p['loc'][1:]) or 'body'}: {p['msg']}" for p in problems)
    return error(400, f"the request does not fit the API: {named}")


@app.exception_handler(Exception)
async def failed(request: Request, exc: Exception) -> JSONResponse:  # a message, never a traceback
    return error(500, f"{type(exc).__name__}: {exc}")


class Sampling(BaseModel):
    """What completions and chat completions share. Fields OpenAI defines and this server does not act on are
    accepted and ignored, except those whose answer would be wrong without them (n > 1, logprobs): refused."""
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: Optional[int] = None
    temperature: Union[int, float] = 1.0  # an int stays one: errors quote the value as the client sent it
    top_p: Union[int, float] = 1.0
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict] = None  # {"include_usage": true}: a last chunk with the token counts
    n: int = 1


class CompletionRequest(Sampling):
    prompt: Union[str, list[str], list[int]]
    logprobs: Optional[int] = None


class ChatRequest(Sampling):
    messages: list[dict]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None


class LoadRequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadRequest(BaseModel):
    lora_name: str


def within_roots(path: str, roots: list[str]) -> str:
    """`path` resolved (links followed), when it lies under one of `roots`; `..` is refused outright."""
    if ".." in Path(path).parts:
        raise RequestError(400, f"lora_path {path!r} holds '..': give the adapter folder's own path")
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise RequestError(403, f"lora_path {path!r} lies outside the folders this server may read adapters from "
                                f"(--adapter-root: {', '.join(roots)})")
    return str(resolved)


@serve.deployment(name="fourierft")
@serve.ingress(app)
class Server:
    def __init__(self, settings: dict):
        settings = {**DEFAULTS, **settings}
        app.state.guard = {"api_key_sha256": settings.get("api_key_sha256"),
                           "max_request_bytes": settings["max_request_bytes"]}
        self.loading = bool(settings.get("allow_runtime_loading"))
        self.roots = [str(Path(r).expanduser().resolve()) for r in settings.get("adapter_roots") or []]
        self.engine = Engine(settings["base"], settings.get("adapters") or {}, settings["memory_budget_mb"],
                             settings["dtype"], settings.get("name"), backend=settings.get("backend", "fourierft"),
                             max_rows=settings["max_batch_size"], gather_ms=settings["batch_wait_ms"])
        self.decode.set_max_batch_size(settings["max_batch_size"])
        self.decode.set_batch_wait_timeout_s(settings["batch_wait_ms"] / 1000)

    async def flow(self, job, stream: bool = True):
        """The job's items from the engine's continuous batch: it joins the running rows at the next decode step.
        Unstreamed, only its end wakes this event loop (not every token of every row)."""
        if not self.engine.continuous:  # a comparison backend: batches of the requests that arrived together
            async for item in self.decode(job):
                yield item
            return
        loop, items = asyncio.get_running_loop(), asyncio.Queue()

        def sink(item):
            if stream or not isinstance(item, str):
                loop.call_soon_threadsafe(items.put_nowait, item)

        self.engine.submit(job, sink)
        while True:
            item = await items.get()
            yield item
            if isinstance(item, (tuple, Failed)):
                return

    @serve.batch(max_batch_size=DEFAULTS["max_batch_size"], batch_wait_timeout_s=DEFAULTS["batch_wait_ms"] / 1000)
    async def decode(self, jobs: list):
        """One mixed generate call for the requests that arrived together (comparison backends); per step each one's
        new text."""
        steps = self.engine.stream(jobs)
        while (step := await asyncio.to_thread(next, steps, None)) is not None:
            yield [StopIteration if slot is DONE else slot for slot in step]

    @app.get("/v1/models")
    async def models(self) -> dict:
        created = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "fourierft", "root": self.engine.name}
                                           for name in self.engine.models()]}

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats(self) -> dict:
        engine = self.engine
        sizes = engine.scheduler.steps if engine.scheduler is not None else engine.batch_sizes
        return {"replica": os.getpid(), "batch_sizes": dict(sizes), "evictions": engine.evictions,
                "cancellations": engine.cancellations, "pinned": dict(engine.pinned),
                "resident": list(engine.recent), "resident_bytes": engine.serve.resident_bytes()}

    def runtime_loading(self) -> None:
        if not self.loading:
            raise RequestError(403, "loading and unloading adapters at runtime is off on this server: its operator "
                                    "turns it on with --allow-runtime-loading and --adapter-root FOLDER")

    @app.post("/v1/load_lora_adapter")
    async def load(self, request: LoadRequest) -> dict:
        self.runtime_loading()
        folder = within_roots(request.lora_path, self.roots) if request.lora_path else ""
        await asyncio.to_thread(self.engine.load, request.lora_name, folder)
        return {"message": f"Success: adapter {request.lora_name!r} loaded"}

    @app.post("/v1/unload_lora_adapter")
    async def unload(self, request: UnloadRequest) -> dict:
        self.runtime_loading()
        await asyncio.to_thread(self.engine.unload, request.lora_name)
        return {"message": f"Success: adapter {request.lora_name!r} unloaded"}

    @app.post("/v1/completions")
    async def completions(self, request: CompletionRequest):
        if request.logprobs is not None:
            raise RequestError(400, f"logprobs={request.logprobs}: this server does not return log probabilities")
        data = request.model_dump()
        prompt_ids = await asyncio.to_thread(self.engine.encode, data.get("prompt"))  # off the event loop
        return await self.respond(data, prompt_ids, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(self, request: ChatRequest):
        if request.logprobs or request.top_logprobs:
            raise RequestError(400, "logprobs / top_logprobs: this server does not return log probabilities")
        data = request.model_dump()
        prompt_ids = await asyncio.to_thread(self.engine.chat, data.get("messages"))
        return await self.respond(data, prompt_ids, chat=True)

    async def respond(self, data: dict, prompt_ids: list, chat: bool):
        if data.get("n", 1) != 1:
            raise RequestError(400, f"n={data.get('n')!r}: this server returns one choice per request (n=1)")
        limit = next((v for v in (data.get("max_completion_tokens"), data.get("max_tokens")) if v is not None),
                     256 if chat else 16)
        job = self.engine.job(data.get("model"), prompt_ids, limit, data.get("temperature", 1.0),
                              data.get("top_p", 1.0), data.get("stop"), data.get("seed"))
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + job.id, "created": int(time.time()), "model": data["model"]}
        if data.get("stream"):
            usage = bool((data.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self.events(job, head, kind, chat, usage), media_type="text/event-stream")
        output = None
        try:
            async for item in self.flow(job, stream=False):
                if isinstance(item, Failed):
                    raise item.error
                if isinstance(item, tuple):  # the job's last text and its Output
                    output = item[1]
        finally:
            self.finished(job, output)
        text = output.text
        choice = {"index": 0, "finish_reason": output.finish_reason, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": output.tokens,
                 "total_tokens": len(prompt_ids) + output.tokens}
        return {**head, "object": kind, "choices": [choice], "usage": usage}

    def finished(self, job, output) -> None:
        """However a request ends: without its Output (its client left, or it failed) its row stops at the next
        decode step; its pin on the adapter goes either way, in a worker thread (it may wait for a generate call) that
        a cancelled request cannot interrupt."""
        if output is None:
            job.cancelled = True
        asyncio.get_running_loop().run_in_executor(None, self.engine.release, job)

    async def events(self, job, head: dict, kind: str, chat: bool, usage: bool = False):
        def event(delta: dict, finish=None) -> str:
            choice = {"index": 0, "finish_reason": finish, "logprobs": None}
            choice.update({"delta": delta} if chat else {"text": delta.get("content", "")})
            chunk = {**head, "object": kind + (".chunk" if chat else ""), "choices": [choice]}
            return f"data: {json.dumps(chunk)}\n\n"

        output = None
        try:
            if chat:
                yield event({"role": "assistant", "content": ""})
            try:
                async for item in self.flow(job):
                    if isinstance(item, Failed):
                        raise item.error
                    last, finish = item if isinstance(item, tuple) else (item, None)
                    if last:
                        yield event({"content": last})
                    if finish is not None:
                        output = finish
                        yield event({}, finish.finish_reason)
                if usage and output is not None:  # as OpenAI's stream_options.include_usage: no choices, the counts
                    counts = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": output.tokens,
                              "total_tokens": len(job.prompt_ids) + output.tokens}
                    chunk = {**head, "object": kind + (".chunk" if chat else ""), "choices": [], "usage": counts}
                    yield f"data: {json.dumps(chunk)}\n\n"
            except Exception as e:  # the status line is sent: the error goes in the stream, as OpenAI's does
                yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}'}})}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # also when the client closed the stream (the generator is closed or cancelled mid-way)
            self.finished(job, output)


def build_app(settings: dict):
    """The Ray Serve application for `settings` (base, adapters, replicas, num_cpus and the keys of DEFAULTS)."""
    batch = settings.get("max_batch_size", DEFAULTS["max_batch_size"])
    return Server.options(num_replicas=settings.get("replicas", 1),
                          ray_actor_options={"num_cpus": settings.get("num_cpus", 1)},
                          max_ongoing_requests=4 * batch).bind(settings)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the base causal LM: a model folder or a hub id")
    parser.add_argument("--name", help="the base model's name in the API (default: the folder's name)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=FOLDER",
                        help="an adapter to serve (save_adapter's folder, or a PEFT FourierFT folder); repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs Ray reserves per replica")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULTS["max_batch_size"],
                        help="rows decoding at once (continuous batching: a request joins at the next step)")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULTS["batch_wait_ms"],
                        help="when idle, how long to wait after a request for the others sent with it")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULTS["memory_budget_mb"],
                        help="adapters resident per replica; the least recently used beyond it are evicted")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--address", default=None, help="a Ray cluster to join ('auto': the running one)")
    parser.add_argument("--backend", default="fourierft",
                        help="the batch backend: fourierft (MixedAdapters), or module:Class for a comparison")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                        help=f"require 'Authorization: Bearer <key>' on every route (default: ${API_KEY_ENV}; the "
                             "environment keeps it out of the process list)")
    parser.add_argument("--allow-runtime-loading", action="store_true",
                        help="accept /v1/load_lora_adapter and /v1/unload_lora_adapter (off by default)")
    parser.add_argument("--adapter-root", action="append", default=[], metavar="FOLDER",
                        help="a folder runtime loads may read adapters from (links resolved); repeatable")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULTS["max_request_bytes"])
    args = parser.parse_args(argv)
    adapters = {}
    for item in args.adapter:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--adapter {item!r}: give NAME=FOLDER")
        adapters[name] = folder
    if args.allow_runtime_loading and not args.adapter_root:
        parser.error("--allow-runtime-loading reads adapters only under the folders you name: add --adapter-root "
                     "FOLDER")
    missing = [root for root in args.adapter_root if not Path(root).expanduser().is_dir()]
    if missing:
        parser.error(f"--adapter-root {missing[0]}: not a folder")
    if args.api_key is not None and not args.api_key.strip():
        parser.error(f"--api-key (or {API_KEY_ENV}) is empty: give a key, or leave it unset")
    for key, value, low in (("--max-batch-size", args.max_batch_size, 1), ("--replicas", args.replicas, 1),
                            ("--max-request-bytes", args.max_request_bytes, 1)):
        if value < low:
            parser.error(f"{key}={value}: give an integer >= {low}")
    for key, value, positive in (("--memory-budget-mb", args.memory_budget_mb, True),
                                 ("--batch-wait-ms", args.batch_wait_ms, False), ("--num-cpus", args.num_cpus, False)):
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            parser.error(f"{key}={value}: give a finite number {'> 0' if positive else '>= 0'}")
    import ray

    # SIGTERM (kill, a scheduler, a test's terminate) ends the server like Ctrl-C: the application is deleted and a
    # Ray instance this process started goes with it, instead of staying behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ray.init(address=args.address, include_dashboard=False, log_to_driver=True)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        settings = {"base": args.base, "name": args.name, "adapters": adapters, "replicas": args.replicas,
                    "num_cpus": args.num_cpus, "max_batch_size": args.max_batch_size,
                    "batch_wait_ms": args.batch_wait_ms, "memory_budget_mb": args.memory_budget_mb,
                    "dtype": args.dtype, "backend": args.backend, "max_request_bytes": args.max_request_bytes,
                    "api_key_sha256": digest(args.api_key.strip()) if args.api_key else None,
                    "allow_runtime_loading": args.allow_runtime_loading, "adapter_roots": args.adapter_root}
        serve.run(build_app(settings), name="fourierft", route_prefix="/", blocking=True)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if args.address:  # a shared cluster keeps running: only this application goes
            serve.delete("fourierft")
        else:
            serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    # run from the importable module, not __main__: Ray pickles the classes of __main__ by value, with copies of
    # their globals (the engine's DONE marker among them)
    from fourierft.serving import server

    server.main()
