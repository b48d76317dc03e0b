"""The whole stack on this machine, without Docker: Elasticsearch, an object store (LocalStack or MinIO),
the ingest path for it (SQS worker or MinIO webhook receiver) and the search API, each a plain process.

    up [--store localstack|minio] [--fresh]    install what is missing, start what is not running
    down                                      stop what up started (by PID)
    status                                    what runs where: each piece running / restarting / dead ...,
                                              and the queue's depth (a summary on stderr, JSON on stdout)

The worker and the webhook receiver run under a supervisor (`stack.py supervise`, one per piece, in the
piece's process group) that starts them again when they exit, after a short back-off, and kills a worker whose
heartbeat (a file it touches before every poll) went stale. A piece is judged alive by what it does: a port
that answers, a fresh heartbeat, a PID that is neither a zombie nor reused for another command.

State lives in IMGSEARCH_LOCAL_DIR (default .cache/local): pids/, logs/, run/ (supervisors' state and the
worker's heartbeat), queues.json, and each store's data.
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
# A PID alone proves nothing: a process killed with SIGKILL stays a zombie until its parent reaps it (1-4 s for
# an orphan here), and a PID can be reused. So a piece is alive when its PID is a process that is not a zombie
# and runs the command we started, and it works when its port answers (servers) or its heartbeat is fresh
# (the worker).
HEARTBEAT_STALE = float(os.environ.get("IMGSEARCH_LOCAL_HEARTBEAT_STALE") or 300)  # seconds: a batch may be slow
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 60.0  # restart delays; reset once a child ran a minute
SUPERVISED = ("worker", "webhook")  # and worker-2, worker-3, ... (up --workers K): see supervised()


def supervised(piece: str) -> bool:
    return piece in SUPERVISED or piece.startswith("worker-")


def worker_pieces() -> list[str]:
    """The workers this stack runs: worker, then worker-2 ... worker-K (up --workers K), by their pid files."""
    extra = sorted((p.stem for p in (STATE / "pids").glob("worker-*.pid")), key=lambda n: int(n.split("-")[1]))
    return ["worker", *extra]


def process_alive(pid: int, argv: list[str] | None = None) -> bool:
    """pid runs and is no zombie; with argv, it still runs that command (its cmdline ends with argv: a script
    run through its #! line has the interpreter in front)."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no procfs (macOS): the best we can do
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat[stat.rindex(")") + 2] in "ZXx":  # zombie or dead: the comm field may hold spaces or ')'
        return False
    if argv:
        words = [w.decode(errors="replace") for w in cmdline if w]
        return words[-len(argv):] == argv
    return True


def pid_of(piece: str) -> int | None:
    """The piece's PID if that process is alive and still ours (see process_alive), else None."""
    try:
        text = (STATE / "pids" / f"{piece}.pid").read_text().strip()
        record = json.loads(text) if text.startswith("{") else {"pid": int(text)}  # older state: a bare PID
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if process_alive(pid, record.get("argv")) else None


def write_pid(piece: str, pid: int, argv: list[str]) -> None:
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "pids" / f"{piece}.pid").write_text(json.dumps({"pid": pid, "argv": argv}))


def answers(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def launch(piece: str, command: list[str], env: dict) -> subprocess.Popen:
    """Start command as its own process group (so stop() ends it and its children), logging to logs/PIECE.log."""
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    log = open(STATE / "logs" / f"{piece}.log", "ab")
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    write_pid(piece, process.pid, command)
    return process


def spawn(piece: str, command: list[str], env: dict, ready_url: str, timeout: float = 120) -> None:
    """Start a piece unless it already answers (or is ours and still starting); wait until ready_url answers."""
    if answers(ready_url):
        say(f"{piece}: already running on {ready_url.split('/', 3)[2]}")
        return
    if pid_of(piece):
        say(f"{piece}: pid {pid_of(piece)} is alive but does not answer yet; waiting for it")
        process = None
    else:
        process = launch(piece, command, env)
        say(f"{piece}: starting (pid {process.pid})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PieceFailed(piece, f"exited with code {process.returncode}")
        if process is None and not pid_of(piece):
            raise PieceFailed(piece, "exited while starting")
        if answers(ready_url):
            say(f"{piece}: ready")
            return
        time.sleep(0.5)
    raise PieceFailed(piece, f"not ready after {timeout:.0f} s")


def stop(piece: str) -> None:
    pid = pid_of(piece)
    if pid is not None:
        say(f"stopping {piece} (pid {pid})")
        os.killpg(pid, signal.SIGTERM)  # a supervised piece: its supervisor and the child, one process group
        for _ in range(100):
            if pid_of(piece) is None:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
    (STATE / "pids" / f"{piece}.pid").unlink(missing_ok=True)
    (STATE / "run" / f"{piece}.json").unlink(missing_ok=True)


# -- the supervisor ----------------------------------------------------------------------------------------
def heartbeat_path(piece: str) -> Path:
    return STATE / "run" / f"{piece}.heartbeat"


def supervision(piece: str) -> dict:
    """What the supervisor last wrote: state (starting | running | restarting | stopped), child, restarts, ..."""
    try:
        return json.loads((STATE / "run" / f"{piece}.json").read_text())
    except (OSError, ValueError):
        return {}


def write_supervision(piece: str, **fields) -> None:
    path = STATE / "run" / f"{piece}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**fields, "supervisor": os.getpid(), "at": time.time()}))
    os.replace(tmp, path)


def supervise(piece: str, command: list[str], heartbeat: Path | None) -> int:
    """Run command; when it exits (or, with heartbeat, stops beating for HEARTBEAT_STALE s), start it again
    after a back-off (1 s, doubling to 30 s; back to 1 s once a child has run a minute). SIGTERM ends both.
    `up` runs this in the piece's process group and log; being the child's parent it reaps it at once."""
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff, restarts, last_exit = BACKOFF_FIRST, 0, None
    while not stopping:
        started, started_wall = time.monotonic(), time.time()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=REPO)  # our env, log and process group
        write_supervision(piece, state="running", child=child.pid, argv=command, restarts=restarts,
                          last_exit=last_exit, since=started_wall)
        while child.poll() is None:
            if stopping:
                child.terminate()
            elif heartbeat is not None:
                try:
                    beat = heartbeat.stat().st_mtime
                except OSError:
                    beat = None
                if beat is not None and beat >= started_wall and time.time() - beat > HEARTBEAT_STALE:
                    say(f"{piece}: no heartbeat for {time.time() - beat:.0f} s; killing pid {child.pid}")
                    child.kill()
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if stopping:
            break
        last_exit, ran = child.returncode, time.monotonic() - started
        if ran >= BACKOFF_RESET:
            backoff = BACKOFF_FIRST
        restarts += 1
        say(f"{piece}: pid {child.pid} exited with code {last_exit} after {ran:.0f} s; "
            f"restart {restarts} in {backoff:.0f} s")
        write_supervision(piece, state="restarting", child=None, argv=command, restarts=restarts,
                          last_exit=last_exit, since=time.time(), restart_at=time.time() + backoff)
        deadline = time.monotonic() + backoff
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
        backoff = min(backoff * 2, BACKOFF_MAX)
    write_supervision(piece, state="stopped", child=None, argv=command, restarts=restarts, last_exit=last_exit)
    return 0


def spawn_supervised(piece: str, command: list[str], env: dict, ready, what: str, timeout: float) -> None:
    """Start command under a supervisor (`stack.py supervise`), unless one already runs; wait until ready()."""
    if pid_of(piece):
        state = supervision(piece).get("state", "running")
        say(f"{piece}: already running (supervised, {state})")
        return
    heartbeat = ["--heartbeat", str(heartbeat_path(piece))] if piece.startswith("worker") else []
    (STATE / "run" / f"{piece}.json").unlink(missing_ok=True)
    supervisor = launch(piece, [sys.executable, str(Path(__file__).resolve()), "supervise", *heartbeat, piece,
                                "--", *command], env)
    say(f"{piece}: starting under a supervisor (pid {supervisor.pid})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            raise PieceFailed(piece, f"its supervisor exited with code {supervisor.returncode}")
        run = supervision(piece)
        if run.get("restarts"):  # it fails at once: say so rather than restart it forever
            stop(piece)
            raise PieceFailed(piece, f"exited with code {run.get('last_exit')}")
        if ready():
            say(f"{piece}: ready")
            return
        time.sleep(0.5)
    raise PieceFailed(piece, f"not {what} after {timeout:.0f} s")


def heartbeat_age(piece: str) -> float | None:
    try:
        return max(0.0, time.time() - heartbeat_path(piece).stat().st_mtime)
    except OSError:
        return None


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
def up(store: str, fresh: bool, workers: int = 1) -> dict:
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

    # The page's origins: its "Add to the bucket" POSTs the file straight to the store (bucket CORS, below).
    page_origins = f"http://127.0.0.1:{PORTS['api']},http://localhost:{PORTS['api']}"
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
        resources = setup_resources({**env, "IMGSEARCH_UPLOAD_ORIGINS": page_origins})
        env.update(IMGSEARCH_DEAD_LETTER_QUEUE_URL=resources["IMGSEARCH_DEAD_LETTER_QUEUE_URL"],
                   IMGSEARCH_QUEUE_URL=resources["IMGSEARCH_QUEUE_URL"])
        (STATE / "queues.json").write_text(json.dumps({"endpoint": endpoint, **resources}))
        for n in range(1, workers + 1):  # K functions on one queue, as Lambda's concurrency runs them
            spawn_worker(env, resources["IMGSEARCH_QUEUE_URL"], "worker" if n == 1 else f"worker-{n}")
    else:
        endpoint = f"http://127.0.0.1:{PORTS['minio']}"
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=MINIO_USER, AWS_SECRET_ACCESS_KEY=MINIO_PASSWORD)
        webhook, token = f"http://127.0.0.1:{PORTS['webhook']}", webhook_token()
        spawn_supervised("webhook", [str(VENV_BIN / "imgsearch"), "webhook", "--port", str(PORTS["webhook"])],
                         {**env, "IMGSEARCH_WEBHOOK_TOKEN": token}, lambda: answers(f"{webhook}/"), "answering",
                         timeout=180)
        spawn("minio", [str(install_minio()), "server", str(STATE / "data" / "minio"),
                        "--address", f"127.0.0.1:{PORTS['minio']}",
                        "--console-address", f"127.0.0.1:{PORTS['minio-console']}"],
              {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
               "MINIO_NOTIFY_WEBHOOK_ENABLE_IMGSEARCH": "on", "MINIO_NOTIFY_WEBHOOK_ENDPOINT_IMGSEARCH": f"{webhook}/",
               "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_IMGSEARCH": token, "MINIO_BROWSER": "off",
               "MINIO_API_CORS_ALLOW_ORIGIN": page_origins,  # MinIO has no bucket CORS API: its own setting
               # Events the receiver could not take (down, restarting, 5xx) wait on disk and are sent again.
               "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_IMGSEARCH": str(STATE / "data" / "minio-events"),
               "MINIO_NOTIFY_WEBHOOK_QUEUE_LIMIT_IMGSEARCH": "100000"},
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
            **{k: v for k, v in env.items()
               if k in ("IMGSEARCH_QUEUE_URL", "IMGSEARCH_DEAD_LETTER_QUEUE_URL", "IMGSEARCH_WEBHOOK_URL")},
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


def spawn_worker(env: dict, queue_url: str, piece: str = "worker") -> None:
    """The worker has no port: ready once it beats (it touches its heartbeat file before every poll)."""
    since = time.time()

    def beating() -> bool:
        try:
            return heartbeat_path(piece).stat().st_mtime >= since - 1
        except OSError:
            return False

    spawn_supervised(piece, [str(VENV_BIN / "imgsearch"), "worker", "--queue-url", queue_url,
                             "--heartbeat", str(heartbeat_path(piece))], env, beating, "polling",
                     timeout=180)


def down(quiet: bool = False, keep_elasticsearch: bool = False) -> None:
    for piece in ("api", *worker_pieces(), "webhook", "minio", "localstack"):
        stop(piece)
    (STATE / "store").unlink(missing_ok=True)  # status: stopped on purpose is "off", not "dead"
    if keep_elasticsearch:  # e.g. shared with other tests
        return
    subprocess.run([str(REPO / "infra/elasticsearch/stop")],
                   env={**os.environ, "IMGSEARCH_ES_PORT": str(PORTS["elasticsearch"])}, capture_output=quiet)


def status() -> dict:
    """Each piece's state, judged by what it does: running (its port answers; the worker: alive and beating),
    restarting (its supervisor waits to start it again), starting, unresponsive (alive, but no answer or no
    recent heartbeat), dead, or off (not part of this store's stack); and, on the LocalStack path, the queue."""
    base = {"elasticsearch": PORTS["elasticsearch"], "localstack": PORTS["localstack"], "minio": PORTS["minio"],
            "webhook": PORTS["webhook"], "api": PORTS["api"]}
    probes = {"elasticsearch": "/_cluster/health", "localstack": "/_localstack/health",
              "minio": "/minio/health/live", "webhook": "/", "api": "/health"}
    es_home = Path(os.environ.get("IMGSEARCH_ES_HOME") or CACHE / "es-run")
    store = (STATE / "store").read_text().strip() if (STATE / "store").exists() else None
    workers = worker_pieces()
    ours = {"localstack": {"elasticsearch", "localstack", *workers, "api"},
            "minio": {"elasticsearch", "minio", "webhook", "api"}}.get(store, set())
    report = {}
    for piece in ("elasticsearch", "localstack", "minio", "webhook", *workers, "api"):
        url = f"http://127.0.0.1:{base[piece]}" if piece in base else None
        log = es_home / "logs" / "imgsearch-es.log" if piece == "elasticsearch" else STATE / "logs" / f"{piece}.log"
        pid = pid_of(piece)
        entry = {"state": "dead", "url": url, "pid": pid, "log": str(log)}
        run = supervision(piece) if supervised(piece) and pid else {}
        if run:
            child = run.get("child")
            entry.update(supervisor=pid, child=child if child and process_alive(child, run.get("argv")) else None,
                         restarts=run.get("restarts", 0), last_exit=run.get("last_exit"))
        if url:
            working = answers(url + probes[piece])
        else:  # the worker
            age = heartbeat_age(piece)
            entry["heartbeat_age_s"] = None if age is None else round(age, 1)
            working = bool(entry.get("child")) and age is not None and age < HEARTBEAT_STALE and \
                time.time() - age >= run.get("since", 0) - 1  # a beat of this child, not of the one before
        if working:
            entry["state"] = "running"
        elif run.get("state") == "restarting":
            entry["state"] = "restarting"
        elif run and entry.get("child") and time.time() - run.get("since", 0) < HEARTBEAT_STALE and \
                (url is None or time.time() - run.get("since", 0) < 180):
            entry["state"] = "starting"
        elif pid or entry.get("child"):
            entry["state"] = "unresponsive"
        elif piece not in ours:
            entry["state"] = "off"
        entry["running"] = entry["state"] == "running"
        report[piece] = entry
    if store == "localstack":
        report["queue"] = queue_depth()
    return report


def queue_depth() -> dict:
    """ApproximateNumberOfMessages (waiting) and ...NotVisible (in flight) of the events queue, and the
    dead-letter queue's depth."""
    try:
        queues = json.loads((STATE / "queues.json").read_text())
    except (OSError, ValueError):
        return {"error": "no queues recorded (run up)"}
    import boto3
    from botocore.config import Config

    sqs = boto3.client("sqs", endpoint_url=queues["endpoint"], region_name="us-east-1", aws_access_key_id="test",
                       aws_secret_access_key="test",
                       config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    try:
        main_q = sqs.get_queue_attributes(QueueUrl=queues["IMGSEARCH_QUEUE_URL"], AttributeNames=names)
        dead_q = sqs.get_queue_attributes(QueueUrl=queues["IMGSEARCH_DEAD_LETTER_QUEUE_URL"], AttributeNames=names)
    except Exception as exc:  # LocalStack is down: say so, the rest of the report still stands
        return {"url": queues["IMGSEARCH_QUEUE_URL"], "error": str(exc).splitlines()[0][:200]}
    return {"url": queues["IMGSEARCH_QUEUE_URL"], "waiting": int(main_q["Attributes"][names[0]]),
            "in_flight": int(main_q["Attributes"][names[1]]),
            "dead_letters": int(dead_q["Attributes"][names[0]]) + int(dead_q["Attributes"][names[1]])}


def summary(report: dict) -> str:
    lines = []
    for piece, entry in report.items():
        if piece == "queue":
            lines.append("queue: " + (entry["error"] if "error" in entry else
                                      f"{entry['waiting']} waiting, {entry['in_flight']} in flight, "
                                      f"{entry['dead_letters']} dead letters"))
            continue
        extra = [f"pid {entry['child'] or '-'} (supervisor {entry['supervisor']}, {entry['restarts']} restarts)"
                 if "supervisor" in entry else f"pid {entry['pid']}" if entry["pid"] else ""]
        if entry.get("heartbeat_age_s") is not None:
            extra.append(f"heartbeat {entry['heartbeat_age_s']:.0f} s ago")
        lines.append(f"{piece}: {entry['state']}" + "".join(f", {e}" for e in extra if e))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="infra/local")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up")
    up_parser.add_argument("--store", choices=["localstack", "minio"], default="localstack")
    up_parser.add_argument("--fresh", action="store_true", help="wipe data first")
    up_parser.add_argument("--workers", type=int, default=1, help="worker processes on the queue (LocalStack "
                                                                  "path; Lambda's concurrency), each supervised")
    down_parser = commands.add_parser("down")
    down_parser.add_argument("--keep-elasticsearch", action="store_true")
    commands.add_parser("status")
    supervise_parser = commands.add_parser("supervise", help="(used by up) run a command, restart it when it exits")
    supervise_parser.add_argument("piece")
    supervise_parser.add_argument("--heartbeat", type=Path, help="also restart it when this file goes stale")
    supervise_parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "supervise":
        return supervise(args.piece, args.argv[1:] if args.argv[:1] == ["--"] else args.argv, args.heartbeat)
    try:
        if args.command == "up":
            for key, value in up(args.store, args.fresh, args.workers).items():
                print(f"{key}={value}")
        elif args.command == "down":
            down(keep_elasticsearch=args.keep_elasticsearch)
        else:
            report = status()
            print(summary(report), file=sys.stderr)
            print(json.dumps(report, indent=2))
    except PieceFailed as exc:
        say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
