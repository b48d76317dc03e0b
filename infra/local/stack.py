"""The whole stack on this machine, without Docker: Elasticsearch, an object store (LocalStack or MinIO),
the ingest path for it (SQS worker or MinIO webhook receiver) and the search API, each a plain process.

    up [--store localstack|minio] [--fresh]    install what is missing, start what is not running
    down                                      stop what up started (by PID)
    status                                    what runs where

State lives in IMGSEARCH_LOCAL_DIR (default .cache/local): pids/, logs/, and each store's data.
up's last lines are KEY=VALUE lines for `eval` (with MinIO: the webhook's token, shared with MinIO, kept in
IMGSEARCH_LOCAL_DIR/webhook-token).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMGSEARCH_CACHE_DIR") or REPO / ".cache")
STATE = Path(os.environ.get("IMGSEARCH_LOCAL_DIR") or CACHE / "local")
VENV_BIN = Path(sys.executable).parent
LOCALSTACK_VENV = CACHE / "localstack-venv"
LOCALSTACK_PINS = ["localstack-core[runtime]==4.13.1", "pyopenssl==25.3.0", "cryptography==46.0.5", "cbor2==5.8.0",
                   "localstack-twisted==25.5.0"]
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"  # what @latest resolved to; pinned
MINIO_BIN = CACHE / "minio" / "bin" / "minio"
MINIO_USER, MINIO_PASSWORD = "imgsearch", "imgsearch-secret"


def port(name: str, default: int) -> int:
    return int(os.environ.get(f"IMGSEARCH_LOCAL_{name}_PORT", default))


PORTS = {"elasticsearch": port("ES", 9200), "localstack": port("LOCALSTACK", 4566), "minio": port("MINIO", 9000),
         "minio-console": port("MINIO_CONSOLE", 9001), "webhook": port("WEBHOOK", 8900), "api": port("API", 8000)}
BUCKET = os.environ.get("IMGSEARCH_BUCKET") or "images"
ES_INDEX = os.environ.get("IMGSEARCH_ES_INDEX") or "search_by_image_index"


class PieceFailed(Exception):
    def __init__(self, piece: str, reason: str):
        log = STATE / "logs" / f"{piece}.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        super().__init__(f"{piece} failed: {reason}\n  log: {log}\n" + "\n".join("  | " + l for l in tail))


def say(message: str) -> None:
    print(f"[local] {message}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------------------------
def pid_of(piece: str) -> int | None:
    try:
        pid = int((STATE / "pids" / f"{piece}.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def answers(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def spawn(piece: str, command: list[str], env: dict, ready_url: str, timeout: float = 120) -> None:
    """Start a piece unless it already answers; wait until ready_url answers."""
    if answers(ready_url):
        say(f"{piece}: already running on {ready_url.split('/', 3)[2]}")
        return
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    log = open(STATE / "logs" / f"{piece}.log", "ab")
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    (STATE / "pids" / f"{piece}.pid").write_text(str(process.pid))
    say(f"{piece}: starting (pid {process.pid})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PieceFailed(piece, f"exited with code {process.returncode}")
        if answers(ready_url):
            say(f"{piece}: ready")
            return
        time.sleep(0.5)
    raise PieceFailed(piece, f"not ready after {timeout:.0f} s")


def stop(piece: str) -> None:
    pid = pid_of(piece)
    if pid is None:
        return
    say(f"stopping {piece} (pid {pid})")
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        if pid_of(piece) is None:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    (STATE / "pids" / f"{piece}.pid").unlink(missing_ok=True)


# -- installs ------------------------------------------------------------------------------------------------
def install_localstack() -> Path:
    python = LOCALSTACK_VENV / "bin" / "python"
    if not python.exists() or subprocess.run([python, "-c", "import localstack.runtime.main"],
                                             capture_output=True).returncode != 0:
        say(f"installing LocalStack 4.13.1 into {LOCALSTACK_VENV} (first time: a minute or two)")
        base = shutil.which("python3.11") or shutil.which("python3.12") or sys.executable
        subprocess.run([base, "-m", "venv", LOCALSTACK_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *LOCALSTACK_PINS], check=True)
    return python


def install_minio() -> Path:
    if not MINIO_BIN.exists():
        if not shutil.which("go"):
            raise PieceFailed("minio", "the Go toolchain is needed to build MinIO (no binary downloads here)")
        say("building MinIO with the Go toolchain (first time: about 3 minutes)")
        subprocess.run(["go", "install", MINIO_MODULE], check=True, env={**os.environ, "GOBIN": str(MINIO_BIN.parent)})
    return MINIO_BIN


# -- the stack ------------------------------------------------------------------------------------------------
def up(store: str, fresh: bool) -> dict:
    if fresh:
        down(quiet=True)
        shutil.rmtree(STATE / "data", ignore_errors=True)
    es_start = [str(REPO / "infra/elasticsearch/start")] + (["--fresh"] if fresh else [])
    es_env = {**os.environ, "IMGSEARCH_ES_PORT": str(PORTS["elasticsearch"])}
    started = subprocess.run(es_start, env=es_env, capture_output=True, text=True)
    if started.returncode != 0:
        raise PieceFailed("elasticsearch", started.stderr.strip().splitlines()[-1] if started.stderr else "start failed")
    es_url = started.stdout.strip().splitlines()[-1]
    say(f"elasticsearch: ready on {es_url}")

    env = {"IMGSEARCH_BACKEND": "elasticsearch", "IMGSEARCH_ES_URL": es_url, "IMGSEARCH_ES_INDEX": ES_INDEX,
           "IMGSEARCH_BUCKET": BUCKET, "AWS_DEFAULT_REGION": "us-east-1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "IMGSEARCH_DATA_DIR": str(STATE / "data" / "imgsearch")}
    if store == "localstack":
        endpoint = f"http://127.0.0.1:{PORTS['localstack']}"
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        spawn("localstack", [str(install_localstack()), "-m", "localstack.runtime.main"],
              {"GATEWAY_LISTEN": f"127.0.0.1:{PORTS['localstack']}", "SERVICES": "s3,sqs",
               "LOCALSTACK_VOLUME_DIR": str(STATE / "data" / "localstack"), "SKIP_SSL_CERT_DOWNLOAD": "1", "SQS_ENDPOINT_STRATEGY": "path"},
              f"{endpoint}/_localstack/health", timeout=120)
        resources = setup_resources(env)
        env.update(IMGSEARCH_DEAD_LETTER_QUEUE_URL=resources["IMGSEARCH_DEAD_LETTER_QUEUE_URL"])
        spawn_worker(env, resources["IMGSEARCH_QUEUE_URL"])
    else:
        endpoint = f"http://127.0.0.1:{PORTS['minio']}"
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=MINIO_USER, AWS_SECRET_ACCESS_KEY=MINIO_PASSWORD)
        webhook, token = f"http://127.0.0.1:{PORTS['webhook']}", webhook_token()
        spawn("webhook", [str(VENV_BIN / "imgsearch"), "webhook", "--port", str(PORTS["webhook"])],
              {**env, "IMGSEARCH_WEBHOOK_TOKEN": token}, f"{webhook}/", timeout=180)
        spawn("minio", [str(install_minio()), "server", str(STATE / "data" / "minio"),
                        "--address", f"127.0.0.1:{PORTS['minio']}",
                        "--console-address", f"127.0.0.1:{PORTS['minio-console']}"],
              {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
               "MINIO_NOTIFY_WEBHOOK_ENABLE_IMGSEARCH": "on", "MINIO_NOTIFY_WEBHOOK_ENDPOINT_IMGSEARCH": f"{webhook}/",
               "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_IMGSEARCH": token, "MINIO_BROWSER": "off"},
              f"{endpoint}/minio/health/live", timeout=120)
        setup_resources({**env, "IMGSEARCH_NOTIFY_ARN": "arn:minio:sqs::IMGSEARCH:webhook"})
        env["IMGSEARCH_WEBHOOK_URL"] = webhook
    api = f"http://127.0.0.1:{PORTS['api']}"
    spawn("api", [str(VENV_BIN / "imgsearch"), "serve", "--port", str(PORTS["api"])], env, f"{api}/health",
          timeout=180)
    (STATE / "store").write_text(store)
    return {"IMGSEARCH_API_URL": api, "IMGSEARCH_ES_URL": es_url, "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1", "IMGSEARCH_BUCKET": BUCKET, "IMGSEARCH_ES_INDEX": ES_INDEX,
            **{k: v for k, v in env.items() if k in ("IMGSEARCH_DEAD_LETTER_QUEUE_URL", "IMGSEARCH_WEBHOOK_URL")},
            **({"IMGSEARCH_WEBHOOK_TOKEN": webhook_token()} if store == "minio" else {})}


def webhook_token() -> str:
    """The webhook's bearer token, shared with MinIO: made once per state folder, so a restart keeps it."""
    path = STATE / "webhook-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def setup_resources(env: dict) -> dict:
    """Bucket, queues and notifications, by the same script LocalStack's init hook runs for Docker users."""
    done = subprocess.run([sys.executable, str(REPO / "localstack/setup_resources.py")], env={**os.environ, **env},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PieceFailed("setup", done.stderr.strip()[-500:])
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def spawn_worker(env: dict, queue_url: str) -> None:
    """The worker has no port: ready once its log says it polls."""
    if pid_of("worker"):
        say("worker: already running")
        return
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    log_path = STATE / "logs" / "worker.log"
    log = open(log_path, "ab")
    offset = log_path.stat().st_size
    process = subprocess.Popen([str(VENV_BIN / "imgsearch"), "worker", "--queue-url", queue_url],
                               env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    (STATE / "pids" / "worker.pid").write_text(str(process.pid))
    say(f"worker: starting (pid {process.pid})")
    for _ in range(360):
        if process.poll() is not None:
            raise PieceFailed("worker", f"exited with code {process.returncode}")
        with open(log_path, "rb") as f:
            f.seek(offset)
            if b"worker polling" in f.read():
                say("worker: ready")
                return
        time.sleep(0.5)
    raise PieceFailed("worker", "not polling after 180 s")


def down(quiet: bool = False, keep_elasticsearch: bool = False) -> None:
    for piece in ("api", "worker", "webhook", "minio", "localstack"):
        stop(piece)
    if keep_elasticsearch:  # e.g. shared with other tests
        return
    subprocess.run([str(REPO / "infra/elasticsearch/stop")],
                   env={**os.environ, "IMGSEARCH_ES_PORT": str(PORTS["elasticsearch"])}, capture_output=quiet)


def status() -> dict:
    base = {"elasticsearch": PORTS["elasticsearch"], "localstack": PORTS["localstack"], "minio": PORTS["minio"],
            "webhook": PORTS["webhook"], "api": PORTS["api"]}
    probes = {"elasticsearch": "/_cluster/health", "localstack": "/_localstack/health",
              "minio": "/minio/health/live", "webhook": "/", "api": "/health"}
    es_home = Path(os.environ.get("IMGSEARCH_ES_HOME") or CACHE / "es-run")
    report = {}
    for piece in ("elasticsearch", "localstack", "minio", "webhook", "worker", "api"):
        url = f"http://127.0.0.1:{base[piece]}" if piece in base else None
        log = es_home / "logs" / "imgsearch-es.log" if piece == "elasticsearch" else STATE / "logs" / f"{piece}.log"
        report[piece] = {"running": answers(url + probes[piece]) if url else pid_of(piece) is not None,
                         "url": url, "pid": pid_of(piece), "log": str(log)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="infra/local")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up")
    up_parser.add_argument("--store", choices=["localstack", "minio"], default="localstack")
    up_parser.add_argument("--fresh", action="store_true", help="wipe data first")
    down_parser = commands.add_parser("down")
    down_parser.add_argument("--keep-elasticsearch", action="store_true")
    commands.add_parser("status")
    args = parser.parse_args()
    try:
        if args.command == "up":
            for key, value in up(args.store, args.fresh).items():
                print(f"{key}={value}")
        elif args.command == "down":
            down(keep_elasticsearch=args.keep_elasticsearch)
        else:
            print(json.dumps(status(), indent=2))
    except PieceFailed as exc:
        say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
