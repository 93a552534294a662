"""The reference model server: ``python -m modelgate.server``.

Serves one release's scikit-learn model over HTTP:

- ``POST /v1/predict``: ``{"instances": [{column: value}, ...]}`` or
  ``{"inputs": {column: [values]}}`` -> ``{"predictions": [...], "scores":
  [...]}``; input that does not fit the training schema gets 422 with the
  column named;
- ``GET /v1/metadata``: the model's identity and input schema;
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is
  loaded), ``GET /metrics`` (Prometheus).

The model and its metadata.json are read from a path or s3:// URI and
checked against the SHA-256s the release recorded before they are parsed;
a mismatch or an untrusted type in the model ends the process (exit 2), so
a pod never serves anything but the gated model. Settings come from flags
or the environment the operator sets (MODELGATE_MODEL_URI, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelgate.serving import oip
from modelgate.serving.live import DEFAULT_WINDOW
from modelgate.serving.live_metrics import LiveMetrics
from modelgate.serving.model import LoadedModel
from modelgate.serving.schema import RANGE_TOLERANCE, InvalidInput
from modelgate.trainer import contract

logger = logging.getLogger("modelgate.server")

# Environment variables the operator (and local mode) set for the server.
MODEL_URI = contract.SERVER_MODEL_URI
MODEL_SHA256 = contract.SERVER_MODEL_SHA256
METADATA_URI = contract.SERVER_METADATA_URI
METADATA_SHA256 = contract.SERVER_METADATA_SHA256
PORT = "MODELGATE_SERVER_PORT"
ENVIRONMENT = "MODELGATE_ENVIRONMENT"
DRIFT_WINDOW = "MODELGATE_DRIFT_WINDOW"
EXIT_LOAD_FAILED = 2
MAX_BODY_BYTES = 32 * 1024 * 1024


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelgate_server_requests", "Requests by endpoint and status code.",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "modelgate_server_request_duration_seconds", "Request latency by endpoint.",
            ["endpoint"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        # With the histogram's _sum and _count, an experiment's Mean metric
        # (the variance needs the sum of squares, which a histogram lacks).
        self.latency_squares = Counter(
            "modelgate_server_request_duration_seconds_squared",
            "Sum of the squares of request latencies by endpoint (seconds squared).",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.scores = Histogram(
            "modelgate_server_prediction_score", "Scores served (binary: the positive class).",
            registry=r, buckets=tuple(i / 10 for i in range(1, 11)),
        )  # fmt: skip
        self.rows = Counter("modelgate_server_rows", "Rows scored.", registry=r)
        self.errors = Counter(
            "modelgate_server_errors", "Refused or failed requests by kind.", ["kind"], registry=r
        )
        self.model = Gauge(
            "modelgate_server_model_info", "The model being served (1 once loaded).",
            ["model", "version", "sha256"], registry=r,
        )  # fmt: skip
        self.live = LiveMetrics(r)


@dataclass
class ServerState:
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    model: LoadedModel | None = None
    failure: str | None = None


class NonFiniteNumber(ValueError):
    """NaN or Infinity in a body: not JSON numbers, and not a missing value."""


def _refuse_constant(constant: str) -> Any:
    raise NonFiniteNumber(
        f"{constant} is not a JSON number: send null for a missing value, and only finite numbers"
    )


def _server_version() -> str:
    try:
        return importlib.metadata.version("modelgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class Answered(Exception):
    """A request answered before its handler's end (an error response)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def build_app(state: ServerState) -> web.Application:
    """The HTTP surface over a (possibly still loading) model."""
    metrics = state.metrics
    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    def answering(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Answered as early:
                return early.response

        return wrapped

    def measured(endpoint: str, handler: Handler) -> Handler:
        answered = answering(handler)

        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            response = await answered(request)
            seconds = time.perf_counter() - started
            metrics.latency.labels(endpoint).observe(seconds)
            metrics.latency_squares.labels(endpoint).inc(seconds * seconds)
            metrics.requests.labels(endpoint, str(response.status)).inc()
            return response

        return wrapped

    async def healthz(_: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if state.model is not None:
            return _json(200, {"status": "ready", "sha256": state.model.sha256})
        if state.failure is not None:
            return _json(503, {"status": "failed", "error": state.failure})
        return _json(503, {"status": "loading"})

    async def metadata(_: web.Request) -> web.Response:
        if state.model is None:
            return _json(503, {"error": "the model is not loaded yet"})
        model = state.model
        return _json(
            200,
            {
                "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
                "task": model.task,
                "positiveLabel": model.positive_label,
                "features": model.schema.describe(),
            },
        )

    async def read_body(request: web.Request) -> Any:
        """The JSON body; a 400 that says why when there is none."""
        return parse_json(await request.read())

    def parse_json(data: bytes) -> Any:
        try:
            return json.loads(data, parse_constant=_refuse_constant)
        except NonFiniteNumber as error:
            problem = str(error)
        except RecursionError:
            problem = (
                "the body nests arrays or objects too deeply to read; send "
                '{"instances": [{column: value}, ...]} or {"inputs": {column: [...]}}'
            )
        except ValueError as error:
            problem = f"the body is not JSON: {error}"
        metrics.errors.labels("invalid_json").inc()
        raise Answered(_json(400, {"error": problem}))

    def validated(model: LoadedModel, body: Any, status: int = 422) -> dict[str, list[Any]]:
        """The body's columns as the model's schema accepts them; a 422 (the
        inference protocol's 400) naming each refused column otherwise."""
        try:
            return model.schema.columns(body)
        except InvalidInput as refused:
            metrics.errors.labels("invalid_input").inc()
            metrics.live.refused(refused)
            raise Answered(_json(status, refused.body())) from refused

    def answer_columns(model: LoadedModel, columns: dict[str, list[Any]]) -> dict[str, Any]:
        """The model's answer to validated columns, counted in the metrics."""
        try:
            answer = model.predict(columns)
        except Exception as error:  # the model's own failure: say so, keep serving
            logger.exception("prediction failed")
            metrics.errors.labels("internal").inc()
            failed = _json(500, {"error": f"the model failed: {type(error).__name__}: {error}"})
            raise Answered(failed) from error
        metrics.rows.inc(len(answer["predictions"]))
        for score in answer.get("scores", []):
            if isinstance(score, float):
                metrics.scores.observe(score)
        metrics.live.scored(columns, answer)
        return answer

    async def predict(request: web.Request) -> web.Response:
        model = state.model
        if model is None:
            metrics.errors.labels("not_ready").inc()
            return _json(503, {"error": "the model is not loaded yet; see /readyz"})
        answer = answer_columns(model, validated(model, await read_body(request)))
        answer["model"] = {"name": model.name, "version": model.version, "sha256": model.sha256}
        return _json(200, answer)

    # -- Open Inference Protocol (v2 REST) ---------------------------------------

    def served(request: web.Request) -> LoadedModel:
        """The model a /v2/models/<name>[/versions/<version>] path names."""
        model = state.model
        if model is None:
            raise Answered(_json(503, {"error": "the model is not loaded yet"}))
        name, version = request.match_info["name"], request.match_info.get("version")
        if name != model.name or (version is not None and version != model.version):
            asked = name + (f" version {version}" if version else "")
            missing = (
                f"model {asked} is not served here; this server serves "
                f"{model.name} version {model.version}"
            )
            raise Answered(_json(404, {"error": missing}))
        return model

    async def v2_live(_: web.Request) -> web.Response:
        return _json(200, {"live": True})

    async def v2_ready(_: web.Request) -> web.Response:
        return _json(200 if state.model is not None else 503, {"ready": state.model is not None})

    async def v2_server(_: web.Request) -> web.Response:
        return _json(
            200,
            {"name": "modelgate", "version": _server_version(), "extensions": list(oip.EXTENSIONS)},
        )

    async def v2_model_ready(request: web.Request) -> web.Response:
        served(request)
        return _json(200, {"ready": True})

    async def v2_metadata(request: web.Request) -> web.Response:
        model = served(request)
        return _json(
            200,
            oip.metadata(
                model.name, model.version, model.schema.describe(), model.task, model.classes
            ),
        )

    async def v2_infer(request: web.Request) -> web.Response:
        if state.model is None:
            metrics.errors.labels("not_ready").inc()
        model = served(request)
        raw = await request.read()
        try:
            header, binary = oip.split_body(raw, request.headers.get(oip.HEADER_LENGTH))
        except oip.ProtocolError as error:
            metrics.errors.labels("invalid_input").inc()
            return _json(400, {"error": str(error)})
        body = parse_json(header)
        try:
            inputs, outputs = oip.request_columns(body, binary)
        except oip.ProtocolError as error:
            metrics.errors.labels("invalid_input").inc()
            return _json(400, {"error": str(error)})
        # The protocol answers a request the model cannot take with 400.
        answer = answer_columns(model, validated(model, {"inputs": inputs}, status=400))
        positive = model.positive_label if model.task == "binary" else None
        found = oip.response(
            answer, [o.name for o in outputs], model.name, model.version, model.classes,
            positive, body.get("id") if isinstance(body, dict) else None,
        )  # fmt: skip
        encoded, header_length = oip.encode_response(found, {o.name for o in outputs if o.binary})
        if header_length is None:
            return web.Response(status=200, body=encoded, content_type="application/json")
        return web.Response(
            status=200,
            body=encoded,
            content_type="application/octet-stream",
            headers={oip.HEADER_LENGTH: str(header_length)},
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/metadata", measured("metadata", metadata))
    app.router.add_post("/v1/predict", measured("predict", predict))
    app.router.add_get("/v2/health/live", v2_live)
    app.router.add_get("/v2/health/ready", v2_ready)
    app.router.add_get("/v2", v2_server)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, measured("metadata", v2_metadata))
        app.router.add_get(f"{prefix}/ready", answering(v2_model_ready))
        app.router.add_post(f"{prefix}/infer", measured("infer", v2_infer))
    return app


@dataclass(frozen=True)
class ServerSettings:
    model_uri: str
    model_sha256: str
    metadata_uri: str
    metadata_sha256: str
    host: str = "0.0.0.0"
    port: int = 8080
    check_ranges: bool = True
    range_tolerance: float = RANGE_TOLERANCE
    # Labels of the live metrics: where the model serves.
    environment: str = ""
    drift_window: int = DEFAULT_WINDOW


async def serve(settings: ServerSettings, state: ServerState | None = None) -> int:
    """Listen at once (probes answer), load in a worker thread, serve until
    SIGTERM/SIGINT; a model that fails to load ends the process."""
    state = state or ServerState()
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    logger.info("listening on %s:%s", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        state.model = await asyncio.to_thread(
            LoadedModel.load,
            settings.model_uri,
            settings.model_sha256,
            settings.metadata_uri,
            settings.metadata_sha256,
            settings.check_ranges,
            settings.range_tolerance,
        )
        model = state.model
        state.metrics.model.labels(model.name, model.version, model.sha256).set(1)
        state.metrics.live.start(
            model.name,
            model.version,
            settings.environment,
            model.schema,
            model.metadata,
            model.positive_label if model.task == "binary" else None,
            settings.drift_window,
        )
        logger.info("serving %s %s (sha256 %s)", model.name, model.version, model.sha256)
        await stop.wait()
    except Exception as error:
        state.failure = f"{type(error).__name__}: {error}"
        logger.error("cannot serve: %s", state.failure)
        code = EXIT_LOAD_FAILED
    finally:
        await runner.cleanup()
    return code


def parse_args(argv: list[str]) -> ServerSettings:
    parser = argparse.ArgumentParser(prog="python -m modelgate.server", description=__doc__)
    env = os.environ.get
    parser.add_argument("--model", default=env(MODEL_URI), help=f"model path or URI ({MODEL_URI})")
    parser.add_argument("--model-sha256", default=env(MODEL_SHA256), help=f"({MODEL_SHA256})")
    parser.add_argument(
        "--metadata", default=env(METADATA_URI), help=f"metadata.json path or URI ({METADATA_URI})"
    )
    parser.add_argument(
        "--metadata-sha256", default=env(METADATA_SHA256), help=f"({METADATA_SHA256})"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(env(PORT) or 8080))
    parser.add_argument(
        "--allow-out-of-range",
        action="store_true",
        help="score numbers outside the training range instead of answering 422",
    )
    parser.add_argument(
        "--range-tolerance",
        type=float,
        default=RANGE_TOLERANCE,
        help="how far past the training range numbers are still accepted, as a share of "
        f"its width (default {RANGE_TOLERANCE}; never below 0 if training had no negatives)",
    )
    parser.add_argument(
        "--environment",
        default=env(ENVIRONMENT) or "",
        help=f"the environment label of the live metrics ({ENVIRONMENT})",
    )
    parser.add_argument(
        "--drift-window",
        type=int,
        default=int(env(DRIFT_WINDOW) or DEFAULT_WINDOW),
        help=f"rows the live drift (PSI) is computed over ({DRIFT_WINDOW}, "
        f"default {DEFAULT_WINDOW})",
    )
    args = parser.parse_args(argv)
    if args.drift_window < 1:
        parser.error(f"--drift-window must be at least 1, got {args.drift_window}")
    missing = [
        flag
        for flag, value in (
            ("--model", args.model),
            ("--model-sha256", args.model_sha256),
            ("--metadata", args.metadata),
            ("--metadata-sha256", args.metadata_sha256),
        )
        if not value
    ]
    if missing:
        parser.error(
            f"missing {', '.join(missing)}: the server loads only an artifact whose "
            "SHA-256 the release recorded"
        )
    return ServerSettings(
        model_uri=args.model,
        model_sha256=args.model_sha256,
        metadata_uri=args.metadata,
        metadata_sha256=args.metadata_sha256,
        host=args.host,
        port=args.port,
        check_ranges=not args.allow_out_of_range,
        range_tolerance=args.range_tolerance,
        environment=args.environment,
        drift_window=args.drift_window,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
