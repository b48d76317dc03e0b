"""How far ingest is behind: the events queue's backlog and the dead letters waiting for someone, for `GET /stats`
and `imgsearch stats` when the queues are configured (IMGSEARCH_QUEUE_URL, IMGSEARCH_DEAD_LETTER_QUEUE_URL).

SQS counts messages but cannot say how old the oldest one is; CloudWatch can (AWS/SQS
ApproximateAgeOfOldestMessage, published every minute on AWS). Where CloudWatch has no figure (LocalStack, a
queue idle for a while) the age is null, not a guess. A queue that cannot be asked makes its part "unavailable"
(the reason goes to the log, not the answer): the stats never fail because of it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from .config import Settings

log = logging.getLogger(__name__)
AGE_WINDOW = timedelta(minutes=15)  # the newest CloudWatch datapoint within this is "now"
# Stats answer at once or without this part: botocore's defaults (60 s connect, retries) would hold a request.
CLIENT_CONFIG = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}}


def ingest_backlog(settings: Settings, *, sqs=None, cloudwatch=None) -> dict | None:
    """{"queue": {...}, "dead_letters": n}, the parts whose queue is configured; None when neither is."""
    if not settings.queue_url and not settings.dead_letter_queue_url:
        return None
    import boto3
    from botocore.config import Config

    config = Config(**CLIENT_CONFIG)
    sqs = sqs or boto3.client("sqs", config=config)
    report: dict = {}
    if settings.queue_url:
        report["queue"] = _queue(settings.queue_url, sqs, cloudwatch or boto3.client("cloudwatch", config=config))
    if settings.dead_letter_queue_url:
        counts = _counts(settings.dead_letter_queue_url, sqs)
        report["dead_letters"] = "unavailable" if counts is None else counts["ApproximateNumberOfMessages"]
    return report


def _queue(url: str, sqs, cloudwatch) -> dict | str:
    counts = _counts(url, sqs)
    if counts is None:
        return "unavailable"
    return {"waiting": counts["ApproximateNumberOfMessages"],  # not yet picked up
            "in_flight": counts["ApproximateNumberOfMessagesNotVisible"],  # being indexed, or waiting to retry
            "delayed": counts["ApproximateNumberOfMessagesDelayed"],
            "oldest_age_s": _oldest_age(url.rstrip("/").rsplit("/", 1)[-1], cloudwatch)}


def _counts(url: str, sqs) -> dict | None:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    except Exception as exc:  # botocore's errors and the network's: the stats go on without this part
        log.warning("could not read the queue's attributes: %s", exc)
        return None
    return {name: int(attributes.get(name, 0)) for name in names}


def _oldest_age(queue_name: str, cloudwatch) -> float | None:
    now = datetime.now(timezone.utc)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS", MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=now - AGE_WINDOW, EndTime=now + timedelta(minutes=1),  # the current minute's included
            Period=60, Statistics=["Maximum"])["Datapoints"]
    except Exception as exc:
        log.warning("could not read the queue's oldest message age from CloudWatch: %s", exc)
        return None
    if not points:
        return None
    return float(max(points, key=lambda point: point["Timestamp"])["Maximum"])
