#!/usr/bin/env python3
"""Create what imgsearch needs on an S3/SQS emulator (LocalStack, moto server, MinIO); safe to re-run.

- the images bucket;
- a dead-letter queue and the events queue (redrive after 8 receives; the handler waits longer before each retry), with a policy letting S3 send;
- the bucket notification: s3:ObjectCreated:*, s3:ObjectRemoved:* and s3:ObjectTagging:* -> the events queue;
- with IMGSEARCH_UPLOAD_ORIGINS (comma-separated origins of the page), the bucket's CORS rule that lets the page
  POST uploads straight into it (template.yaml's CorsConfiguration). MinIO has no bucket CORS API: it takes
  MINIO_API_CORS_ALLOW_ORIGIN when it starts (infra/local/stack.py sets it), so the rule is skipped there.

With IMGSEARCH_NOTIFY_ARN set (MinIO: arn:minio:sqs::IMGSEARCH:webhook) the notification goes to that
target instead and no queues are made. Prints KEY=VALUE lines for the environment of the worker.

Environment: AWS_ENDPOINT_URL (required: this script is for emulators; on AWS, template.yaml does this),
AWS_DEFAULT_REGION (us-east-1), IMGSEARCH_BUCKET (images), IMGSEARCH_QUEUE (imgsearch-events),
IMGSEARCH_DEAD_LETTER_QUEUE (imgsearch-events-dlq), IMGSEARCH_NOTIFY_ARN (unset),
IMGSEARCH_QUEUE_VISIBILITY_TIMEOUT (60: seconds before a message a worker took and never finished comes back).
Credentials default to test/test, which LocalStack and moto accept.
"""

from __future__ import annotations

import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

NOTIFICATION_ID = "imgsearch"
EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
# A tag change updates the document's tags. Queues (LocalStack, moto) get it as s3:ObjectTagging:Put/Delete.
# MinIO (the webhook target) refuses that name and sends s3:ObjectCreated:PutTagging/DeleteTagging, which its
# s3:ObjectCreated:* already covers (tests/e2e/test_local_stack.py checks both).
TAGGING_EVENTS = ["s3:ObjectTagging:*"]
# Locally a failed message comes back after a minute; on AWS the queue uses 6x the function timeout.
VISIBILITY_TIMEOUT = os.environ.get("IMGSEARCH_QUEUE_VISIBILITY_TIMEOUT") or "60"


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        print("setup_resources: set AWS_ENDPOINT_URL to the emulator (e.g. http://127.0.0.1:4566)", file=sys.stderr)
        return 2
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    bucket = os.environ.get("IMGSEARCH_BUCKET") or "images"
    # Standard retries also cover "connection refused" while the emulator is still starting.
    config = Config(region_name=region, retries={"mode": "standard", "max_attempts": 10},
                    s3={"addressing_style": "path"})  # MinIO and LocalStack without DNS need path style
    s3 = boto3.client("s3", endpoint_url=endpoint, config=config)

    output = create_resources(s3, boto3.client("sqs", endpoint_url=endpoint, config=config), bucket, region=region,
                              queue=os.environ.get("IMGSEARCH_QUEUE") or "imgsearch-events",
                              dead_letter_queue=os.environ.get("IMGSEARCH_DEAD_LETTER_QUEUE") or "imgsearch-events-dlq",
                              notify_arn=os.environ.get("IMGSEARCH_NOTIFY_ARN"))
    origins = [o.strip() for o in (os.environ.get("IMGSEARCH_UPLOAD_ORIGINS") or "").split(",") if o.strip()]
    if origins:
        allow_page_uploads(s3, bucket, origins)
    for key, value in output.items():
        print(f"{key}={value}")
    return 0


def create_resources(s3, sqs, bucket: str, *, region: str = "us-east-1", queue: str = "imgsearch-events",
                     dead_letter_queue: str = "imgsearch-events-dlq", notify_arn: str | None = None) -> dict:
    """The bucket, and its notifications to notify_arn, or (without one) to a new queue with a dead-letter
    queue. Returns the KEY=VALUE pairs main() prints."""
    ensure_bucket(s3, bucket, region)
    output = {"IMGSEARCH_BUCKET": bucket}
    target = notify_arn
    if not target:
        dlq_url = ensure_queue(sqs, dead_letter_queue, {"MessageRetentionPeriod": "1209600"})
        queue_url = ensure_queue(sqs, queue, {
            "VisibilityTimeout": VISIBILITY_TIMEOUT,
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue_arn(sqs, dlq_url), "maxReceiveCount": "8"}),
        })
        target = queue_arn(sqs, queue_url)
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": s3_may_send(target, bucket)})
        output.update(IMGSEARCH_QUEUE_URL=queue_url, IMGSEARCH_DEAD_LETTER_QUEUE_URL=dlq_url)
    ensure_notification(s3, bucket, target, EVENTS if notify_arn else EVENTS + TAGGING_EVENTS)
    return output


def allow_page_uploads(s3, bucket: str, origins: list[str]) -> None:
    """The page's POST of an upload form (POST /uploads) is cross-origin: the browser reads S3's answer only if
    the bucket's CORS rule names the page's origin. The same rule as template.yaml's."""
    rules = [{"ID": "PageUploads", "AllowedMethods": ["POST"], "AllowedOrigins": origins, "MaxAgeSeconds": 3000}]
    try:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotImplemented":  # MinIO: CORS comes from its own setting
            raise
        print(f"setup_resources: no bucket CORS API here; allow {', '.join(origins)} in the server's own "
              "settings (MinIO: MINIO_API_CORS_ALLOW_ORIGIN)", file=sys.stderr)


def ensure_bucket(s3, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except ClientError as exc:  # created meanwhile by a concurrent run
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


def ensure_queue(sqs, name: str, attributes: dict[str, str]) -> str:
    """Create the queue, or bring an existing one to these attributes (create_queue alone would refuse
    an existing queue whose attributes differ)."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in exc.response["Error"]["Code"]:
            raise
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def s3_may_send(queue: str, bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ImagesBucketNotifications", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue,
        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
    }]})


def ensure_notification(s3, bucket: str, target: str, events: list[str]) -> None:
    """Replace our own entry and keep any other notifications the bucket has."""
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    queues = [q for q in current.get("QueueConfigurations", []) if q.get("Id") != NOTIFICATION_ID]
    queues.append({"Id": NOTIFICATION_ID, "QueueArn": target, "Events": events})
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration={**current, "QueueConfigurations": queues})


if __name__ == "__main__":
    sys.exit(main())
