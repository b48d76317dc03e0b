"""Local stand-ins for the AWS pieces around our functions, so the same handler code runs on one machine.

- run_worker plays Lambda's SQS event source mapping: long-poll, call the extract handler with the real
  message JSON, delete only what succeeded, leave the rest to the queue's redrive policy.
- serve_webhook receives MinIO's webhook notifications and calls the same handler.
- load_function imports a function's module (functions/extract/app.py, functions/search/app.py) by path.
- make_api_server serves the search function over HTTP as `imgsearch serve` does.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
import logging
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from .errors import ConfigError, OperatorError, PermanentError, TransientError

log = logging.getLogger("imgsearch.local")
MAX_WEBHOOK_BODY = 1 << 20  # one MinIO event is a few KB


def load_function(name: str, functions_dir: Path | None = None):
    """Import <functions_dir>/<name>/app.py as module 'imgsearch_fn_<name>' (each function has its own app.py);
    functions_dir: Settings.functions_dir, or by default functions/ of this checkout (the package is installed
    editable from layers/imgsearch)."""
    module_name = f"imgsearch_fn_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    root = functions_dir or Path(__file__).resolve().parents[3] / "functions"
    if not root.is_dir():
        raise ConfigError(f"cannot find the functions folder at {root}; set IMGSEARCH_FUNCTIONS_DIR")
    folder = root / name
    spec = importlib.util.spec_from_file_location(module_name, folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))  # so the function's own helper modules (chalicelib/) import as in Lambda
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def make_api_server(app, host: str, port: int, *, max_body_bytes: int):
    """Chalice's local server for `app`, with what API Gateway does before a request reaches the function:
    405 for methods no route has (http.server answers 501 to TRACE and the like), and a body over max_body_bytes (or a
    Content-Length that is not a number) refused before it is read. Returns chalice's LocalDevServer."""
    from chalice.config import Config
    from chalice.local import ChaliceRequestHandler, LocalDevServer

    class Handler(ChaliceRequestHandler):
        def _refuse(self, status: int, message: str, headers: dict | None = None) -> None:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._send_http_response(status, {**(headers or {}), "Connection": "close"},
                                     json.dumps({"message": message, "code": "bad_request"}))

        def _generic_handle(self) -> None:
            declared = self.headers.get("content-length", "0").strip()
            if not declared.isdigit():
                return self._refuse(400, "Content-Length must be a whole number of bytes")
            if int(declared) > max_body_bytes:
                return self._refuse(413, f"the request body is over this service's {max_body_bytes} bytes")
            super()._generic_handle()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

        def __getattr__(self, name: str):  # http.server looks up do_<METHOD>: any other method (TRACE, ...)
            if name.startswith("do_"):
                return lambda: self._refuse(405, f"{self.command} is not allowed", {"Allow": "GET, POST"})
            raise AttributeError(name)

    return LocalDevServer(app, Config.create(), host, port, handler_cls=Handler)


class LocalContext:
    """The few Lambda context attributes our handlers and powertools read."""

    def __init__(self, function_name: str):
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 3008
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def run_worker(queue_url: str, handler: Callable[[dict, object], dict], *, sqs=None, wait_seconds: int = 10,
               batch_size: int = 10, stop: threading.Event | None = None, idle_exit: float | None = None,
               heartbeat: Path | None = None) -> dict:
    """Poll until stop is set (or, with idle_exit, after that many seconds without messages). With heartbeat,
    touch that file at every turn of the loop (before each poll), so a supervisor can tell a live worker from a
    dead or stuck one by what it does rather than by its PID."""
    import boto3

    sqs = sqs or boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    totals = {"received": 0, "succeeded": 0, "failed": 0}
    last_message = time.monotonic()
    if heartbeat is not None:
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
    while not (stop and stop.is_set()):
        if heartbeat is not None:
            heartbeat.touch()
        try:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=batch_size,
                                           WaitTimeSeconds=wait_seconds, AttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", [])
        except Exception as exc:  # the queue itself is down: wait and try again, as Lambda's poller does
            log.warning("receive failed: %s", exc)
            time.sleep(1)
            continue
        if not messages:
            if idle_exit is not None and time.monotonic() - last_message >= idle_exit:
                break
            continue
        last_message = time.monotonic()
        event = {"Records": [_sqs_record(m, arn) for m in messages]}
        try:
            response = handler(event, LocalContext("extract")) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:  # the whole invocation failed: Lambda would leave every message on the queue
            log.exception("handler failed for a batch of %d", len(messages))
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
        totals["received"] += len(messages)
        totals["succeeded"] += len(done)
        totals["failed"] += len(messages) - len(done)
    return totals


def _sqs_record(message: dict, queue_arn: str) -> dict:
    return {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": message.get("Attributes", {}), "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody"), "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3] if queue_arn.count(":") >= 3 else "local",
    }


class FailureLog:
    """Permanent failures the webhook path saw, as JSON lines (MinIO has no dead-letter queue)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def add(self, entries: list[dict]) -> None:
        if not entries:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                for entry in entries:
                    out.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry},
                                         ensure_ascii=False) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_webhook_server(host: str, port: int, handler: Callable[[dict, object], dict], failures: FailureLog,
                        auth_token: str | None) -> ThreadingHTTPServer:
    """POST /  (MinIO's webhook target) -> handler; GET /failures lists rejected objects. Both need the token
    (MinIO sends it as `Authorization: Bearer TOKEN`); POST takes only JSON bodies of at most MAX_WEBHOOK_BODY
    bytes, so a web page cannot post to it cross-site and no body is read before its size is known."""
    if not auth_token:
        raise ConfigError("the webhook needs a token: IMGSEARCH_WEBHOOK_TOKEN or --auth-token, the same as MinIO's "
                          "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_<ID>")
    expected = auth_token.removeprefix("Bearer ").encode()

    class Webhook(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True  # the body, if any, is left unread
            self._reply(status, {"message": message})

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
            return hmac.compare_digest(given, expected)

        def do_GET(self):  # MinIO probes the target; /failures is for people and tests
            if self.path.rstrip("/") != "/failures":
                return self._reply(200, {"ok": True})
            if not self._authorised():
                return self._refuse(401, "missing or wrong Authorization token")
            self._reply(200, {"failures": failures.read()})

        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            if not self._authorised():
                return self._refuse(401, "missing or wrong Authorization token")
            if self.headers.get_content_type() != "application/json" or "Content-Type" not in self.headers:
                return self._refuse(415, "the body must be Content-Type: application/json")
            declared = self.headers.get("Content-Length")
            if declared is None:
                return self._refuse(411, "Content-Length is required")
            if not declared.strip().isdigit():
                return self._refuse(400, "Content-Length must be a whole number of bytes")
            if int(declared) > MAX_WEBHOOK_BODY:
                return self._refuse(413, f"the body is over {MAX_WEBHOOK_BODY} bytes")
            try:
                event = json.loads(self.rfile.read(int(declared)) or b"{}")
            except ValueError:
                return self._reply(400, {"message": "body is not JSON"})
            try:
                result = handler(event, LocalContext("extract"))
            except PermanentError as exc:  # e.g. not an object-change event: record it, never retry
                where = event if isinstance(event, dict) else {}
                failures.add([{"reason": str(exc), "event": where.get("EventName"), "key": where.get("Key")}])
                return self._reply(200, {"rejected": str(exc)})
            except TransientError as exc:  # MinIO retries undelivered events
                return self._reply(503, {"message": str(exc)})
            except OperatorError:  # a setting, the weights, the index: retried until the operator fixes it
                log.exception("webhook: the service is misconfigured")
                return self._reply(503, {"message": "the service is misconfigured; its log has the details"})
            except Exception:
                log.exception("webhook handler failed")
                return self._reply(500, {"message": "internal error; the webhook's log has the details"})
            failures.add(result.get("rejected", []))
            self._reply(200, result)

        def log_message(self, fmt, *args):
            log.info("webhook %s", fmt % args)

    return ThreadingHTTPServer((host, port), Webhook)
