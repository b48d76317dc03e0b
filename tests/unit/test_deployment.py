"""template.yaml and the apps agree: API Gateway has a resource for every Chalice route (Chalice dispatches on the
resource path, so a missing one would 403 on AWS while every local test passes)."""

from __future__ import annotations

from pathlib import Path

import yaml

from imgsearch.local import load_function

REPO = Path(__file__).resolve().parents[2]


class CloudFormationLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !If ... as plain values; we only look at the structure."""


CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)))


def template() -> dict:
    return yaml.load((REPO / "template.yaml").read_text(), Loader=CloudFormationLoader)


def test_every_chalice_route_has_an_api_gateway_resource_and_nothing_else():
    app = load_function("search").app
    paths = template()["Resources"]["SearchApi"]["Properties"]["DefinitionBody"]["paths"]
    declared = {(path, method.upper()) for path, methods in paths.items() for method in methods}
    routed = {(path, method) for path, entries in app.routes.items() for method in entries}
    assert declared == routed


def test_only_the_page_and_health_are_public_when_an_api_key_is_set():
    paths = template()["Resources"]["SearchApi"]["Properties"]["DefinitionBody"]["paths"]
    public = {path for path, methods in paths.items() for m in methods.values() if "security" not in m}
    assert public == {"/", "/health"}
    assert public == {path for _, path in load_function("search").PUBLIC_ROUTES}


def test_extract_function_reports_partial_batch_failures_from_the_queue():
    resources = template()["Resources"]
    extract = next(r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"
                   and r["Metadata"].get("DockerTag") == "extract")
    sqs_events = [e for e in extract["Properties"]["Events"].values() if e["Type"] == "SQS"]
    assert sqs_events and sqs_events[0]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert extract["Properties"]["PackageType"] == "Image"


# -- hardening (issue 14, item 5): always on, whatever the parameters ------------------------------------------
def functions() -> dict[str, dict]:
    return {r["Metadata"]["DockerTag"]: r for r in template()["Resources"].values()
            if r["Type"] == "AWS::Serverless::Function"}


def test_the_stage_is_throttled_and_both_functions_have_reserved_concurrency():
    resources, parameters = template()["Resources"], template()["Parameters"]
    api = resources["SearchApi"]
    assert "Condition" not in api
    settings = api["Properties"]["MethodSettings"]
    assert {"ResourcePath": "/*", "HttpMethod": "*"}.items() <= settings[0].items()
    assert settings[0]["ThrottlingRateLimit"] == "ApiThrottlingRateLimit"  # !Ref, read as its name
    assert settings[0]["ThrottlingBurstLimit"] == "ApiThrottlingBurstLimit"
    for name in ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit"):
        assert parameters[name]["Type"] == "Number" and parameters[name]["Default"] >= 1
    for tag in ("extract", "search"):
        function = functions()[tag]
        reserved = function["Properties"]["ReservedConcurrentExecutions"]
        assert reserved == f"{tag.capitalize()}ReservedConcurrency" and "Condition" not in function
        assert parameters[reserved]["MinValue"] >= 1
    assert functions()["reconcile"]["Properties"]["ReservedConcurrentExecutions"] == 1  # one repair at a time
    queue = next(e for e in functions()["extract"]["Properties"]["Events"].values() if e["Type"] == "SQS")
    assert queue["Properties"]["ScalingConfig"]["MaximumConcurrency"] == "ExtractReservedConcurrency"


def test_octet_stream_uploads_arrive_as_binary():
    assert "application~1octet-stream" in template()["Resources"]["SearchApi"]["Properties"]["BinaryMediaTypes"]


def test_the_bucket_refuses_plain_http():
    policies = [r for r in template()["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"
                and r["Properties"]["Bucket"] == "ImagesBucket"]
    assert len(policies) == 1 and "Condition" not in policies[0]
    [deny] = [s for s in policies[0]["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*" and len(deny["Resource"]) == 2
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_page_may_upload_into_the_bucket_under_the_upload_prefix_only():
    """POST /uploads signs forms with the search function's role, so it may put objects under UploadPrefix and
    nowhere else; the bucket's CORS rule lets the page (UploadOrigins, else the region's API Gateway URLs) read
    S3's answer to the form's POST."""
    resources, parameters = template()["Resources"], template()["Parameters"]
    [rule] = resources["ImagesBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedMethods"] == ["POST"]
    assert rule["AllowedOrigins"] == ["HasUploadOrigins", "UploadOrigins",
                                      ["https://*.execute-api.${AWS::Region}.amazonaws.com"]]  # !If, as loaded here
    assert parameters["UploadOrigins"]["Default"] == "" and parameters["UploadPrefix"]["Default"] == "uploads/"
    search = functions()["search"]["Properties"]
    assert search["Environment"]["Variables"]["IMGSEARCH_UPLOAD_PREFIX"] == "UploadPrefix"
    statements = [s for p in search["Policies"] if isinstance(p, dict) and "Statement" in p for s in p["Statement"]]
    writes = [s for s in statements if "Put" in str(s["Action"]) or "s3:*" in str(s["Action"])]
    assert writes == [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "${ImagesBucket.Arn}/${UploadPrefix}*"}]


def test_the_api_writes_access_logs_to_its_own_log_group():
    resources = template()["Resources"]
    setting = resources["SearchApi"]["Properties"]["AccessLogSetting"]
    log_group = setting["DestinationArn"].removesuffix(".Arn")  # !GetAtt SearchApiAccessLogs.Arn
    assert resources[log_group]["Type"] == "AWS::Logs::LogGroup"
    assert resources[log_group]["Properties"]["RetentionInDays"]
    assert "$context.requestId" in setting["Format"] and "$context.status" in setting["Format"]


def test_elasticsearch_keys_come_from_secrets_and_the_search_function_has_its_own():
    """The functions read their key from Secrets Manager when they start (IMGSEARCH_ES_API_KEY_SECRET), allowed
    to read that one secret only; the key itself is in no template or function configuration."""
    parameters = template()["Parameters"]
    assert "IMGSEARCH_ES_API_KEY" not in template()["Globals"]["Function"]["Environment"]["Variables"]
    assert "resolve:secretsmanager" not in (REPO / "template.yaml").read_text()
    extract, search = (functions()[name]["Properties"] for name in ("extract", "search"))
    extract_env, search_env = extract["Environment"]["Variables"], search["Environment"]["Variables"]
    assert extract_env["IMGSEARCH_ES_API_KEY_SECRET"] == "ElasticsearchApiKeySecretArn"  # !Ref, as loaded here
    assert "ElasticsearchSearchApiKeySecretArn" in str(search_env["IMGSEARCH_ES_API_KEY_SECRET"])
    assert "ElasticsearchSearchApiKey" in str(search_env["IMGSEARCH_ES_API_KEY"])
    assert "ElasticsearchSearchApiKey" not in str(extract_env)
    readable = {name: [str(p) for p in props["Policies"] if "AWSSecretsManagerGetSecretValuePolicy" in str(p)]
                for name, props in (("extract", extract), ("search", search))}
    assert len(readable["extract"]) == 1 and "ElasticsearchApiKeySecretArn" in readable["extract"][0]
    assert any("ElasticsearchSearchApiKeySecretArn" in p for p in readable["search"])
    for name in ("ElasticsearchApiKey", "ElasticsearchSearchApiKey"):
        assert parameters[name]["NoEcho"] is True


def test_a_scheduled_reconcile_repairs_drift_and_failed_messages_back_off():
    reconcile = functions()["reconcile"]
    assert reconcile["Properties"]["ImageConfig"]["Command"] == ["app.reconcile"]
    assert reconcile["Metadata"]["DockerBuildTarget"] == "extract"  # the extract image, another handler
    [schedule] = reconcile["Properties"]["Events"].values()
    assert schedule["Type"] == "Schedule" and schedule["Properties"]["Schedule"] == "ReconcileSchedule"
    assert template()["Parameters"]["ReconcileSchedule"]["Default"] == "rate(1 day)"
    queue = template()["Resources"]["EventsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 8  # with the handler's backoff: ~40 min of outage
    assert "sqs:ChangeMessageVisibility" in str(functions()["extract"]["Properties"]["Policies"])


# -- see it run (issue 16, item 5): traces, metrics, the backlog on GET /stats, alarms ---------------------------
def test_functions_and_the_stage_are_traced_and_name_their_metrics():
    globals_ = template()["Globals"]["Function"]
    assert globals_["Tracing"] == "Active"
    assert globals_["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "ImgSearch"
    assert template()["Resources"]["SearchApi"]["Properties"]["TracingEnabled"] is True
    services = {tag: function["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
                for tag, function in functions().items()}
    assert services == {"extract": "imgsearch-extract", "reconcile": "imgsearch-extract", "search": "imgsearch-search"}


def test_the_search_function_may_read_the_backlog_and_nothing_more():
    search = functions()["search"]["Properties"]
    variables = search["Environment"]["Variables"]
    assert variables["IMGSEARCH_QUEUE_URL"] == "EventsQueue"  # !Ref, as loaded here
    assert variables["IMGSEARCH_DEAD_LETTER_QUEUE_URL"] == "DeadLetterQueue"
    statements = [s for p in search["Policies"] if isinstance(p, dict) and "Statement" in p for s in p["Statement"]]
    sqs = [s for s in statements if "sqs:" in str(s["Action"])]
    assert sqs == [{"Effect": "Allow", "Action": "sqs:GetQueueAttributes",
                    "Resource": ["EventsQueue.Arn", "DeadLetterQueue.Arn"]}]
    cloudwatch = [s for s in statements if "cloudwatch:" in str(s["Action"])]
    assert cloudwatch == [{"Effect": "Allow", "Action": "cloudwatch:GetMetricStatistics", "Resource": "*"}]


ALARMS = {  # name: (namespace, metric, statistic, the dimensions: what it watches)
    "DeadLettersAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum",
                         {"QueueName": "DeadLetterQueue.QueueName"}),  # !GetAtt, as loaded here
    "IngestLagAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", {"QueueName": "EventsQueue.QueueName"}),
    "ExtractErrorsAlarm": ("AWS/Lambda", "Errors", "Sum", {"FunctionName": "ExtractFunction"}),
    "SearchErrorsAlarm": ("AWS/Lambda", "Errors", "Sum", {"FunctionName": "SearchFunction"}),
    "ReconcileErrorsAlarm": ("AWS/Lambda", "Errors", "Sum", {"FunctionName": "ReconcileFunction"}),
    "Api5xxAlarm": ("AWS/ApiGateway", "5XXError", "Sum", {"ApiName": "${AWS::StackName}-search", "Stage": "api"}),
}


def test_alarms_watch_the_queues_the_functions_and_the_api_and_notify_the_topic():
    resources = template()["Resources"]
    alarms = {name: r for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == set(ALARMS)
    for name, (namespace, metric, statistic, dimensions) in ALARMS.items():
        alarm = alarms[name]["Properties"]
        assert "Condition" not in alarms[name], name
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (namespace, metric, statistic), name
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions, name
        assert alarm["Period"] == 300, name
        assert alarm["AlarmActions"] == ["AlarmTopic"] and alarm["OKActions"] == ["AlarmTopic"], name
        assert alarm["TreatMissingData"] == "notBreaching" and len(alarm["AlarmDescription"]) > 40, name
        if name != "IngestLagAlarm":  # the first one counts
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1, name
            assert alarm["EvaluationPeriods"] == 1, name
    lag = alarms["IngestLagAlarm"]["Properties"]
    assert lag["ComparisonOperator"] == "GreaterThanThreshold" and lag["Threshold"] == "IngestLagAlarmSeconds"
    assert lag["EvaluationPeriods"] == lag["DatapointsToAlarm"] == 2
    assert template()["Parameters"]["IngestLagAlarmSeconds"]["Default"] == 900
    # API Gateway names the API in its metrics by the definition's title, and the stage by its name.
    api = resources["SearchApi"]["Properties"]
    assert ALARMS["Api5xxAlarm"][3] == {"ApiName": api["DefinitionBody"]["info"]["title"], "Stage": api["StageName"]}


def test_the_alarm_topic_mails_alarm_email_when_given():
    resources, parameters = template()["Resources"], template()["Parameters"]
    topic = resources["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic" and "Condition" not in topic
    # CloudWatch cannot publish to a topic under the AWS-managed key (its key policy does not admit it).
    assert topic["Properties"].get("KmsMasterKeyId") != "alias/aws/sns"
    assert parameters["AlarmEmail"]["Default"] == ""
    [subscription] = [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {"TopicArn": "AlarmTopic", "Protocol": "email", "Endpoint": "AlarmEmail"}
    assert template()["Outputs"]["AlarmTopicArn"]["Value"] == "AlarmTopic"
