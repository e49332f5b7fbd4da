"""An OpenAI-compatible HTTP server for a base causal LM and its FourierFT adapters, on Ray Serve.

Ray Serve carries what a serving framework should: the HTTP proxy, dynamic batching (`@serve.batch`: requests that
arrive together are decoded in one mixed generate call, up to `max_batch_size` rows or `batch_wait_ms` of waiting),
streaming responses, replicas, and a Ray cluster past one machine. The FastAPI ingress speaks OpenAI's API, with
`model` naming the adapter (the base model by its own name):

    GET  /v1/models
    POST /v1/completions            {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"}
    POST /v1/chat/completions       {"model", "messages", ...}: the tokenizer's chat template
    POST /v1/load_lora_adapter      {"lora_name", "lora_path"}   (vLLM's names for loading an adapter at runtime)
    POST /v1/unload_lora_adapter    {"lora_name"}
    GET  /stats                     rows per generate call (how requests were batched), evictions

Refusals are OpenAI-style JSON errors with a 4xx status naming the problem. Each replica loads the adapters given at
start; a runtime load or unload reaches the replica that serves it (with several replicas, give adapters at start).

python -m fourierft.serving.server --base MODEL_FOLDER --adapter NAME=FOLDER [...] [--port 8000] [--replicas 1]
(--address auto joins a running Ray cluster; the default starts one on this machine.)
"""

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from .engine import DONE, Engine, RequestError

DEFAULTS = {"max_batch_size": 16, "batch_wait_ms": 10.0, "memory_budget_mb": 1024.0, "dtype": "auto"}


def error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "model_not_found" if "model" in message else "not_found", 409: "conflict"}.get(status)
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


app = FastAPI(title="fourierft server")


@app.exception_handler(RequestError)
async def refused(request: Request, exc: RequestError) -> JSONResponse:
    return error(exc.status, str(exc))


@app.exception_handler(Exception)
async def failed(request: Request, exc: Exception) -> JSONResponse:  # a message, never a traceback
    return error(500, f"{type(exc).__name__}: {exc}")


async def body(request: Request) -> dict:
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError as e:
        raise RequestError(400, f"the request body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data


@serve.deployment(name="fourierft")
@serve.ingress(app)
class Server:
    def __init__(self, settings: dict):
        settings = {**DEFAULTS, **settings}
        self.engine = Engine(settings["base"], settings.get("adapters") or {}, settings["memory_budget_mb"],
                             settings["dtype"], settings.get("name"), backend=settings.get("backend", "fourierft"))
        self.decode.set_max_batch_size(settings["max_batch_size"])
        self.decode.set_batch_wait_timeout_s(settings["batch_wait_ms"] / 1000)

    @serve.batch(max_batch_size=DEFAULTS["max_batch_size"], batch_wait_timeout_s=DEFAULTS["batch_wait_ms"] / 1000)
    async def decode(self, jobs: list):
        """One mixed generate call for the requests that arrived together; per step each one's new text."""
        steps = self.engine.stream(jobs)
        while (step := await asyncio.to_thread(next, steps, None)) is not None:
            yield [StopIteration if slot is DONE else slot for slot in step]

    @app.get("/v1/models")
    async def models(self) -> dict:
        created = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "fourierft", "root": self.engine.name}
                                           for name in self.engine.models()]}

    @app.get("/stats")
    async def stats(self) -> dict:
        engine = self.engine
        return {"replica": os.getpid(), "batch_sizes": dict(engine.batch_sizes), "evictions": engine.evictions,
                "resident": list(engine.recent), "resident_bytes": engine.serve.resident_bytes()}

    @app.post("/v1/load_lora_adapter")
    async def load(self, request: Request) -> dict:
        data = await body(request)
        await asyncio.to_thread(self.engine.load, data.get("lora_name"), data.get("lora_path") or "")
        return {"message": f"Success: adapter {data['lora_name']!r} loaded"}

    @app.post("/v1/unload_lora_adapter")
    async def unload(self, request: Request) -> dict:
        data = await body(request)
        await asyncio.to_thread(self.engine.unload, data.get("lora_name"))
        return {"message": f"Success: adapter {data['lora_name']!r} unloaded"}

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        data = await body(request)
        return await self.respond(data, self.engine.encode(data.get("prompt")), chat=False)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request):
        data = await body(request)
        return await self.respond(data, self.engine.chat(data.get("messages")), chat=True)

    async def respond(self, data: dict, prompt_ids: list, chat: bool):
        if data.get("n", 1) != 1:
            raise RequestError(400, f"n={data.get('n')!r}: this server returns one choice per request (n=1)")
        limit = data.get("max_completion_tokens", data.get("max_tokens", 256 if chat else 16))
        job = self.engine.job(data.get("model"), prompt_ids, limit, data.get("temperature", 1.0),
                              data.get("top_p", 1.0), data.get("stop"), data.get("seed"))
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + job.id, "created": int(time.time()), "model": data["model"]}
        if data.get("stream"):
            return StreamingResponse(self.events(job, head, kind, chat), media_type="text/event-stream")
        text, output = "", None
        async for item in self.decode(job):
            if isinstance(item, tuple):  # the job's last text and its Output
                item, output = item
            text += item
        choice = {"index": 0, "finish_reason": output.finish_reason, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": output.tokens,
                 "total_tokens": len(prompt_ids) + output.tokens}
        return {**head, "object": kind, "choices": [choice], "usage": usage}

    async def events(self, job, head: dict, kind: str, chat: bool):
        def event(delta: dict, finish=None) -> str:
            choice = {"index": 0, "finish_reason": finish, "logprobs": None}
            choice.update({"delta": delta} if chat else {"text": delta.get("content", "")})
            chunk = {**head, "object": kind + (".chunk" if chat else ""), "choices": [choice]}
            return f"data: {json.dumps(chunk)}\n\n"

        if chat:
            yield event({"role": "assistant", "content": ""})
        try:
            async for item in self.decode(job):
                last, finish = item if isinstance(item, tuple) else (item, None)
                if last:
                    yield event({"content": last})
                if finish is not None:
                    yield event({}, finish.finish_reason)
        except Exception as e:  # the status line is sent: the error goes in the stream, as OpenAI's does
            yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}'}})}\n\n"
        yield "data: [DONE]\n\n"


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
    parser.add_argument("--max-batch-size", type=int, default=DEFAULTS["max_batch_size"])
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULTS["batch_wait_ms"])
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULTS["memory_budget_mb"],
                        help="adapters resident per replica; the least recently used beyond it are evicted")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--address", default=None, help="a Ray cluster to join ('auto': the running one)")
    parser.add_argument("--backend", default="fourierft",
                        help="the batch backend: fourierft (MixedAdapters), or module:Class for a comparison")
    args = parser.parse_args(argv)
    adapters = {}
    for item in args.adapter:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--adapter {item!r}: give NAME=FOLDER")
        adapters[name] = folder
    for key, value, low in (("--max-batch-size", args.max_batch_size, 1), ("--replicas", args.replicas, 1)):
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
                    "dtype": args.dtype, "backend": args.backend}
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
