"""The `imgsearch` command: index, search, serve the API, and run the local stand-ins for Lambda."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from .config import SEARCH_MODES, Settings
from .errors import ImgSearchError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(backend=args.backend, data_dir=args.data_dir, weights=args.weights,
                                     es_urls=tuple(args.es_url.split(",")) if args.es_url else None,
                                     es_index=args.es_index)
        return args.run(args, settings) or 0
    except ImgSearchError as exc:
        print(f"imgsearch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgsearch", description="Search images by image (VGG19 features).")
    parser.add_argument("--backend", choices=["embedded", "elasticsearch"], help="index backend [IMGSEARCH_BACKEND]")
    parser.add_argument("--data-dir", type=Path, help="where the embedded index lives [IMGSEARCH_DATA_DIR]")
    parser.add_argument("--es-url", help="Elasticsearch URL(s), comma-separated [IMGSEARCH_ES_URL]")
    parser.add_argument("--es-index", help="Elasticsearch index name [IMGSEARCH_ES_INDEX]")
    parser.add_argument("--weights", help="VGG19 notop weights file [IMGSEARCH_VGG19_WEIGHTS]")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("init", help="create the index (idempotent)")
    p.set_defaults(run=cmd_init)

    for name, prune, text in (("index", False, "index a folder or s3://bucket/prefix"),
                              ("sync", True, "index, and drop documents whose objects are gone")):
        p = commands.add_parser(name, help=text)
        p.add_argument("source", help="a folder, or s3://BUCKET[/PREFIX]")
        p.add_argument("--batch-size", type=int, help="images per model call [IMGSEARCH_BATCH_SIZE]")
        p.add_argument("--prune", action="store_true", default=prune, help="delete documents of vanished objects")
        p.add_argument("--force", action="store_true", help="re-embed unchanged objects too")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.set_defaults(run=cmd_index)

    p = commands.add_parser("search", help="search with an image file or an http(s) URL")
    p.add_argument("image", help="an image file, or an http:// or https:// URL (public hosts only, unless "
                                 "IMGSEARCH_URL_ALLOW_PRIVATE=true)")
    _search_options(p)
    p.set_defaults(run=cmd_search)

    p = commands.add_parser("similar", help="images like one already indexed")
    p.add_argument("key")
    p.add_argument("--bucket", help="bucket or folder of the key (read for this run) [IMGSEARCH_BUCKET]")
    _search_options(p)
    p.set_defaults(run=cmd_similar)

    p = commands.add_parser("stats", help="document count, model, backend and whitening")
    p.set_defaults(run=cmd_stats)

    p = commands.add_parser("duplicates", help="groups of copies flagged at ingest, largest first")
    p.add_argument("--page", type=int, default=1, help="1-based page of groups")
    p.add_argument("--page-size", type=int, default=10, help="groups per page")
    p.set_defaults(run=cmd_duplicates)

    p = commands.add_parser("refit", help="refit the index's whitening on every indexed image now (it also "
                                          "refits itself as the index grows)")
    p.set_defaults(run=cmd_refit)

    p = commands.add_parser("serve", help="serve the search API and web page on this machine")
    p.add_argument("--bucket", help="the default bucket or folder, served with IMGSEARCH_ALLOWED_BUCKETS "
                                    "[IMGSEARCH_BUCKET]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("worker", help="play Lambda's SQS trigger: feed queue messages to the extract handler")
    p.add_argument("--queue-url", required=True)
    p.add_argument("--endpoint-url", help="SQS/S3 endpoint (LocalStack, moto) [AWS_ENDPOINT_URL]")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without messages")
    p.add_argument("--heartbeat", type=Path, help="touch this file before every poll (infra/local's supervisor "
                                                  "judges the worker by it)")
    p.set_defaults(run=cmd_worker)

    p = commands.add_parser("backfill", help="load an existing bucket through the queue: one ObjectCreated message "
                                             "per object, for the extract function (resumable)")
    p.add_argument("source", help="s3://BUCKET[/PREFIX]; the bucket must be allowed (IMGSEARCH_ALLOWED_BUCKETS, "
                                  "IMGSEARCH_BUCKET)")
    p.add_argument("--queue-url", required=True, help="the extract function's queue (the stack's QueueUrl output)")
    p.add_argument("--endpoint-url", help="SQS/S3 endpoint (LocalStack, moto) [AWS_ENDPOINT_URL]")
    p.add_argument("--checkpoint", type=Path, help="where the last key enqueued is kept, to resume "
                                                   "[DATA_DIR/backfill/<bucket, prefix, queue>.json]")
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint: enqueue every object again")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_backfill)

    p = commands.add_parser("webhook", help="receive MinIO webhook notifications and feed the extract handler")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--auth-token", help="expected bearer token, MinIO's auth_token (required; prefer the variable, "
                                        "which `ps` does not show) [IMGSEARCH_WEBHOOK_TOKEN]")
    p.set_defaults(run=cmd_webhook)

    p = commands.add_parser("eval", help="retrieval quality on a dataset with groundtruth.csv")
    p.add_argument("dataset", type=Path)
    p.add_argument("--queries", help="only queries whose path starts with this (e.g. E63/)")
    p.add_argument("--leave-out", action="store_true", help="also search each query with its relevant images "
                                                            "left out: how often the answer is 'no confident match'")
    _rerank_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser("build-model", help="build the int8 model (the fast runtime) from the weights, "
                                                "calibrated on photos like the ones you will index")
    p.add_argument("calibration", nargs="+", type=Path, help="folders of calibration photos (a few dozen in all)")
    p.add_argument("--out", type=Path, required=True, help="the model's .xml path (a .bin is written beside it)")
    p.set_defaults(run=cmd_build_model)
    return parser


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", "--page-size", dest="page_size", type=int, default=10, help="hits per page")
    p.add_argument("--page", type=int, default=1, help="1-based page number")
    p.add_argument("--min-score", type=float, help="lowest cosine similarity to return (-1..1)")
    p.add_argument("--min-confidence", type=float, help="lowest confidence to return (0..1; 0.5 and up: a "
                                                        "confident match; re-ranks, whatever --no-rerank says)")
    p.add_argument("--mode", choices=SEARCH_MODES, help="exact or knn [IMGSEARCH_SEARCH_MODE]")
    p.add_argument("--prefix", help="only keys starting with this")
    p.add_argument("--filter", dest="filters", action="append", metavar="NAME=VALUE",
                   help="only images with this label: folder=cats/, tag.color=red, meta.author=ann; repeat it "
                        "(every name must match; a name given twice matches either value)")
    _rerank_option(p)
    p.add_argument("--collapse", action="store_true", help="one hit per group of copies (see `duplicates`)")
    p.add_argument("--json", action="store_true", help="print {hits: [...], total, ...} as JSON")


def _rerank_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="verify the best candidates with local features [IMGSEARCH_RERANK]")


def _service(settings: Settings):
    from .pipeline import ImageSearch

    return ImageSearch.open(settings)


def cmd_init(args, settings: Settings) -> int:
    search = _service(settings)
    print(json.dumps(search.stats()))
    return 0


def cmd_index(args, settings: Settings) -> int:
    from tqdm import tqdm

    if args.batch_size:
        settings = settings.replace(batch_size=args.batch_size)
    search = _service(settings)
    storage, prefix = search.storages.open_source(args.source)
    total = sum(1 for _ in storage.list(prefix))
    with tqdm(total=total, unit="img", desc="indexing", file=sys.stderr, disable=None) as bar:
        report = search.ingester.index_source(storage, prefix, prune=args.prune, force=args.force,
                                              progress=bar.update)
    search.upkeep.after_ingest()  # refit the whitening if the index has grown enough
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"indexed {report.indexed}, relabelled {report.relabelled}, unchanged {report.unchanged}, "
              f"deleted {report.deleted}, "
              f"failed {len(report.failed)}; {search.index.count()} documents in the {search.index.name} index")
        for key, reason in report.failed:
            print(f"  failed: {key}: {reason}")
    return 0


def cmd_search(args, settings: Settings) -> int:
    if _URL.match(args.image):  # any scheme: fetch refuses all but http(s) with the reason
        from .fetch import fetch_image

        data = fetch_image(args.image, settings)
    else:
        try:
            data = Path(args.image).read_bytes()
        except OSError as exc:
            raise ImgSearchError(f"cannot read {args.image}: {exc.strerror}") from None
    results = _service(settings).searcher.search_image(data, _options(args))
    _print_results(results, args.json)
    return 0


def cmd_similar(args, settings: Settings) -> int:
    from .storage import canonical_bucket

    bucket = _bucket_arg(args.bucket) or settings.bucket
    if not bucket:
        raise ImgSearchError("say which bucket or folder the key is in: --bucket or IMGSEARCH_BUCKET")
    search = _service(settings)
    if args.bucket:  # named by the operator on the command line: allowed for this run
        search.storages.allow(bucket)
    results = search.searcher.similar_to(canonical_bucket(bucket), args.key, _options(args))
    _print_results(results, args.json)
    return 0


def _bucket_arg(value: str | None) -> str | None:
    """A --bucket argument: an existing folder (relative paths too) as its absolute path, else a bucket name."""
    if value and not value.startswith("s3://") and Path(value).is_dir():
        return str(Path(value).resolve())
    return value


def _options(args):
    from .labels import parse_filters
    from .options import SearchOptions

    return SearchOptions(min_score=args.min_score, page=args.page, page_size=args.page_size, mode=args.mode,
                         key_prefix=args.prefix, rerank=args.rerank, min_confidence=args.min_confidence,
                         filters=parse_filters(args.filters), collapse=args.collapse)


def _print_results(results, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results.to_dict(), ensure_ascii=False, indent=2))
        return
    first = (results.page - 1) * results.page_size
    print(f"{results.total} hits (page {results.page}, {results.took_ms:.0f} ms)")
    if not results.hits and results.page == 1:
        print("  no match: nothing indexed reaches the minimum you asked for")
    for rank, hit in enumerate(results.hits, start=first + 1):
        confidence = "" if hit.confidence is None else f"  confidence {hit.confidence:.2f}"
        verified = f"  verified ({hit.inliers} inliers)" if hit.verified else ""
        copy = f"  copy of {hit.duplicate_of['key']}" if hit.duplicate_of else ""
        print(f"{rank:>4}  {hit.score:.4f}  {hit.key}  {hit.url or '(bucket not served)'}{confidence}{verified}{copy}")


def cmd_stats(args, settings: Settings) -> int:
    print(json.dumps(_service(settings).stats()))
    return 0


def cmd_duplicates(args, settings: Settings) -> int:
    print(json.dumps(_service(settings).searcher.duplicate_groups(args.page, args.page_size), ensure_ascii=False,
                     indent=2))
    return 0


def cmd_refit(args, settings: Settings) -> int:
    print(json.dumps(_service(settings).upkeep.refit()))
    return 0


def _local_function(name: str, settings: Settings):
    """A function's app.py, run in this process. Its CloudWatch metric lines (imgsearch.metrics) would only
    clutter this terminal and the worker's JSON output: off unless POWERTOOLS_METRICS_DISABLED=false."""
    from .local import load_function
    from .metrics import DISABLED_ENV

    os.environ.setdefault(DISABLED_ENV, "true")
    return load_function(name, settings.functions_dir)


def cmd_serve(args, settings: Settings) -> int:
    from . import service
    from .local import make_api_server

    module = _local_function("search", settings)
    service.use(_service(settings.replace(bucket=_bucket_arg(args.bucket))))  # served besides the allowlist
    server = make_api_server(module.app, args.host, args.port,
                             max_body_bytes=module.inputs.max_body_bytes(settings.max_image_bytes))
    print(f"serving the search API and page on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    server.server.serve_forever()
    return 0


def cmd_worker(args, settings: Settings) -> int:
    import boto3

    from . import service
    from .local import run_worker

    extract = _local_function("extract", settings)
    service.use(_service(settings))  # the handler uses this process's settings and index
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url) if args.endpoint_url else boto3.client("sqs")
    print(f"worker polling {args.queue_url}", file=sys.stderr, flush=True)
    totals = run_worker(args.queue_url, extract.handler, sqs=sqs, idle_exit=args.idle_exit,
                        heartbeat=args.heartbeat)
    print(json.dumps(totals))
    return 0


def cmd_backfill(args, settings: Settings) -> int:
    import boto3
    from tqdm import tqdm

    from .backfill import backfill, default_checkpoint, open_bucket, parse_source

    bucket, prefix = parse_source(args.source)
    if args.endpoint_url:
        settings = settings.replace(s3_endpoint_url=args.endpoint_url)
    storage = open_bucket(settings, bucket)  # allowed buckets only, and no model: Storages alone
    checkpoint = args.checkpoint or default_checkpoint(settings.data_dir, storage.bucket, prefix, args.queue_url)
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url) if args.endpoint_url else boto3.client("sqs")
    with tqdm(unit="obj", desc="enqueueing", file=sys.stderr, disable=None) as bar:
        report = backfill(storage, prefix, args.queue_url, sqs, checkpoint=checkpoint, restart=args.restart,
                          progress=bar.update)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        resumed = f"; resumed after {report.resumed_after!r}" if report.resumed_after else ""
        print(f"listed {report.listed} objects, sent {report.sent} messages in {report.batches} batches, "
              f"failed {len(report.failed)}, skipped {report.skipped} folder markers{resumed}; "
              f"{report.sent_total} messages over every run (checkpoint {report.checkpoint})")
        for key, reason in report.failed:
            print(f"  failed: {key}: {reason}")
    return 0 if report.ok else 1


def cmd_webhook(args, settings: Settings) -> int:
    from . import service
    from .local import FailureLog, make_webhook_server

    extract = _local_function("extract", settings)
    failures = FailureLog(settings.data_dir / "failures.jsonl")
    server = make_webhook_server(args.host, args.port, extract.handler, failures,  # no token: refused at once
                                 args.auth_token or settings.webhook_token)
    service.use(_service(settings))  # the model loads while requests wait in the socket's backlog
    print(f"webhook listening on http://{args.host}:{args.port}/ (failures: GET /failures)", flush=True)
    server.serve_forever()
    return 0


def cmd_build_model(args, settings: Settings) -> int:
    from .quantize import build_int8_model, calibration_images, check_agreement

    images = calibration_images(args.calibration)
    out = build_int8_model(settings.weights, images, args.out)
    lowest = check_agreement(settings.weights, out, images[::6])
    print(f"wrote {out} (calibrated on {len(images)} images; int8 vs fp32 document vectors: cosine >= {lowest:.4f})")
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from .evaluate import evaluate, format_report

    report = evaluate(args.dataset, settings.replace(rerank=args.rerank), query_prefix=args.queries,
                      leave_out=args.leave_out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
