"""template.yaml: lint-clean, and once transformed by SAM and created in moto's CloudFormation,
it yields the tables, stream and event source mapping the code relies on."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tq_cloud.backends.aws import AwsSettings
from tq_cloud.backends.aws.dynamodb_projections import ENTITY_INDEX
from tq_cloud.backends.aws.dynamodb_tasks import DUE_INDEX, FINISHED_INDEX, RUNNING_INDEX

ROOT = Path(__file__).resolve().parents[1]


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def yaml_template() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    parsed: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text())
    return parsed


def translated() -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template = yaml_template()
    for name in ("WorkerFunction", "SweeperFunction"):
        template["Resources"][name]["Properties"]["CodeUri"] = "s3://tq-artifacts/code.zip"
    template["Resources"]["TqCloudLayer"]["Properties"]["ContentUri"] = "s3://tq-artifacts/code.zip"
    result: dict[str, Any] = transform(template, {}, NoManagedPolicies())
    return result


def without_versions(template: dict[str, Any]) -> dict[str, Any]:
    """The template with its Lambda versions and aliases (AutoPublishAlias, for SnapStart) and
    its dashboard left out, what refers to an alias pointed at its function: moto's
    CloudFormation cannot create them. Their wiring is checked on the translated template instead (test_snapstart_...)."""
    resources = template["Resources"]
    aliases = {name: {"Fn::GetAtt": [r["Properties"]["FunctionName"]["Ref"], "Arn"]}  # Ref of an alias: its ARN
               for name, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"}

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in aliases:
                return aliases[node["Ref"]]
            return {k: repoint(v) for k, v in node.items()}
        return [repoint(v) for v in node] if isinstance(node, list) else node

    kept = {name: repoint(r) for name, r in resources.items()  # (the dashboard names the alarms moto skips)
            if r["Type"] not in ("AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::CloudWatch::Dashboard")}
    return {**template, "Resources": kept}


def test_snapstart_on_python_3_12_with_the_event_sources_on_the_published_alias() -> None:
    resources = translated()["Resources"]
    for name in ("WorkerFunction", "SweeperFunction"):
        props = resources[name]["Properties"]
        assert props["Runtime"] == "python3.12" and props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert resources[f"{name}Aliaslive"]["Properties"]["FunctionName"] == {"Ref": name}
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 2 and all(m["Properties"]["FunctionName"] == {"Ref": "WorkerFunctionAliaslive"}
                                      for m in mappings), "a mapping on $LATEST would skip the snapshot"
    [rule] = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": "SweeperFunctionAliaslive"}


@pytest.fixture
def stack() -> Iterator[dict[str, Any]]:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tq-artifacts")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("tq_cloud/__init__.py", "")
        s3.put_object(Bucket="tq-artifacts", Key="code.zip", Body=archive.getvalue())
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        cfn.create_stack(StackName="tq", TemplateBody=json.dumps(without_versions(translated())),
                         Capabilities=["CAPABILITY_IAM"])
        [described] = cfn.describe_stacks(StackName="tq")["Stacks"]
        assert described["StackStatus"] == "CREATE_COMPLETE"
        yield {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}


def test_the_deployed_resources_match_what_the_backends_use(stack: dict[str, Any]) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    tasks = ddb.describe_table(TableName=stack["TasksTableName"])["Table"]
    indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in tasks["GlobalSecondaryIndexes"]}
    assert indexes == {DUE_INDEX: ["due_bucket", "execute_at_ms"], RUNNING_INDEX: ["running_bucket", "processing_ms"],
                       FINISHED_INDEX: ["finished_key", "finished_ms"]}
    assert [k["AttributeName"] for k in tasks["KeySchema"]] == ["id"]
    barriers = ddb.describe_table(TableName=stack["BarriersTableName"])["Table"]
    assert [k["AttributeName"] for k in barriers["KeySchema"]] == ["pk", "sk"]
    projections = ddb.describe_table(TableName=stack["ProjectionsTableName"])["Table"]
    assert [i["IndexName"] for i in projections["GlobalSecondaryIndexes"]] == [ENTITY_INDEX]
    assert ddb.describe_table(TableName=stack["LocksTableName"])["Table"]["KeySchema"][0]["AttributeName"] == "lock_key"
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    summary = kinesis.describe_stream_summary(StreamName=stack["StreamName"])["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2


def test_stream_and_tables_are_encrypted_at_rest() -> None:
    resources = translated()["Resources"]
    assert resources["TasksStream"]["Properties"]["StreamEncryption"]["EncryptionType"] == "KMS"
    tables = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert len(tables) == 4 and all(t["Properties"]["SSESpecification"]["SSEEnabled"] for t in tables)
    assert resources["WorkerFailureQueue"]["Properties"]["KmsMasterKeyId"] == "alias/aws/sqs"


def test_the_event_source_mappings_report_partial_failures(stack: dict[str, Any]) -> None:
    lam = boto3.client("lambda", region_name="us-east-1")
    mappings = {m["EventSourceArn"]: m for m in lam.list_event_source_mappings()["EventSourceMappings"]}
    lane = next(m for arn, m in mappings.items() if arn.startswith("arn:aws:sqs:"))
    assert lane["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and lane["BatchSize"] == 10
    assert lane["FunctionArn"] == mappings[stack["StreamArn"]]["FunctionArn"], "the worker takes both sources"
    mapping = mappings[stack["StreamArn"]]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True and mapping["MaximumRetryAttempts"] == 10
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(stack["WorkerFailureQueueUrl"].rsplit("/", 1)[1])
    worker = lam.get_function(FunctionName=mapping["FunctionArn"])["Configuration"]
    env = worker["Environment"]["Variables"]
    assert env["TQ_TASKS_TABLE"] == stack["TasksTableName"] and env["TQ_STREAM_NAME"] == stack["StreamName"]
    assert env["TQ_DELAY_QUEUE_URL"] == stack["DelayQueueUrl"]
    assert worker["Handler"] == "handler.handler" and env["TQ_APP"] == "tq_cloud.examples.app:app"


def test_every_alarm_notifies_the_topic_and_exhausted_tasks_raise_one(stack: dict[str, Any]) -> None:
    """moto's CloudFormation skips alarms: they are checked on the translated template; the
    worker's metric itself in tests/aws/test_lambda_handlers.py."""
    resources = translated()["Resources"]
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    to_topic = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
    assert len(alarms) == 7 and all(a["AlarmActions"] == [to_topic] for a in alarms.values())
    assert {alarms["WorkerThrottlesAlarm"]["MetricName"], alarms["StreamWriteThrottlesAlarm"]["MetricName"]} == {
        "Throttles", "WriteProvisionedThroughputExceeded"}
    assert resources["AlarmTopic"]["Condition"] == "CreateAlarmTopic", "a topic of the user's replaces ours"
    exhausted = alarms["ExhaustedTasksAlarm"]
    assert (exhausted["Namespace"], exhausted["MetricName"]) == ("tq-cloud", "TasksExhausted")
    assert exhausted["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}]
    worker = boto3.client("lambda", region_name="us-east-1").get_function(FunctionName="tq-worker")["Configuration"]
    assert worker["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "tq", "the metric's service dimension"
    topic = boto3.client("sns", region_name="us-east-1").get_topic_attributes(TopicArn=stack["AlarmTopicArn"])
    assert topic["Attributes"]["TopicArn"] == stack["AlarmTopicArn"]


def test_the_outputs_give_a_producer_its_settings_and_policy(stack: dict[str, Any]) -> None:
    """TqEnvironment is a ready TQ_* block: every name is a setting, and it names this stack's resources."""
    block = dict(line.split("=", 1) for line in stack["TqEnvironment"].strip().splitlines())
    known = {f"TQ_{name.upper()}" for name in AwsSettings.model_fields}
    assert set(block) <= known, set(block) - known
    assert block["TQ_STREAM_NAME"] == stack["StreamName"] and block["TQ_TASKS_TABLE"] == stack["TasksTableName"]
    assert block["TQ_DELAY_QUEUE_URL"] == stack["DelayQueueUrl"]
    assert stack["ProducerPolicyArn"].startswith("arn:aws:iam::")


def test_each_function_is_its_module_in_functions_and_shares_the_layer_the_makefile_builds() -> None:
    resources, source = translated()["Resources"], yaml_template()["Resources"]
    assert source["TqCloudLayer"]["Metadata"]["BuildMethod"] == "makefile"
    for name, folder in (("WorkerFunction", "worker"), ("SweeperFunction", "sweeper")):
        assert source[name]["Properties"]["CodeUri"] == f"functions/{folder}/"
        assert (ROOT / "functions" / folder / "handler.py").is_file()
        props = resources[name]["Properties"]
        otel, (ours, theirs), without = props["Layers"]["Fn::If"]  # the ADOT layer, when given, after ours
        [layer] = without  # the translated name of a layer version carries a hash of its content
        assert otel == "HasOtelLayer" and ours == layer and theirs == {"Ref": "OtelLayerArn"}
        assert props["Handler"] == "handler.handler" and layer["Ref"].startswith("TqCloudLayer")


def test_the_package_ships_bytecode_that_ignores_file_timestamps(tmp_path: Path) -> None:
    """The deployment zip drops timestamps and /var/task is read-only: only hash-based bytecode
    that the interpreter trusts without the source's mtime spares a cold start from compiling."""
    empty = tmp_path / "requirements.txt"
    empty.write_text("")
    subprocess.run(["make", "-s", "build-TqCloudLayer", f"ARTIFACTS_DIR={tmp_path / 'layer'}",
                    f"PYTHON={sys.executable}", f"REQUIREMENTS={empty}"], cwd=ROOT, check=True, capture_output=True)
    package = tmp_path / "layer" / "python"
    assert not {"local", "simulation", "cli", "console", "scaffold"} & {p.name for p in (package / "tq_cloud").iterdir()}, \
        "what runs only on a laptop stays out of the layer"
    compiled = sorted(package.rglob("*.pyc"))
    sources = sorted(package.rglob("*.py"))
    assert len(compiled) == len(sources) > 50
    assert all(int.from_bytes(p.read_bytes()[4:8], "little") == 0b01 for p in compiled), "unchecked-hash pycs"
    # a source edited after the build is not even read: the module runs from its bytecode
    marker = package / "tq_cloud" / "examples" / "__init__.py"
    marker.write_text("raise SystemExit('compiled from source')\n")
    env = dict(os.environ, PYTHONPATH=str(package), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", "import tq_cloud.examples"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_dashboard_charts_every_metric_the_worker_publishes_and_shows_every_alarm() -> None:
    """Its body is JSON once substituted; it searches each EMF metric of aws_lambda/metrics.py per
    queue and type, and its alarm widget lists every alarm of the template."""
    from tq_cloud.domain.tally import METRIC_NAMES

    resources = yaml_template()["Resources"]
    text = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([A-Za-z:]+)(?:\.\w+)?\}", text))
    assert names <= set(resources) | {"AWS::Region", "AWS::StackName"}, names - set(resources)
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", text))
    searched = {m for w in body["widgets"] if w["type"] == "metric" for line in w["properties"]["metrics"]
                if isinstance(line[0], dict) for m in re.findall(r'MetricName="(\w+)"', line[0]["expression"])}
    published = {"TasksExecuted", "TasksFailed", "TasksRetried", "TasksDeadLettered", "LatenessMs", "RunTimeMs"}
    assert published <= set(METRIC_NAMES.values()) | {"LatenessMs", "RunTimeMs"} and published <= searched
    [alarm_widget] = [w for w in body["widgets"] if w["type"] == "alarm"]
    alarms = {n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(re.findall(r"\$\{(\w+)\.Arn\}", text)) == alarms and len(alarm_widget["properties"]["alarms"]) == 7


def test_active_tracing_is_an_option_with_its_grant_only_when_chosen() -> None:
    source = yaml_template()
    assert source["Parameters"]["Tracing"]["AllowedValues"] == ["Active", "PassThrough"]
    assert source["Parameters"]["Tracing"]["Default"] == "PassThrough"
    assert source["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    xray = {"Fn::If": ["TracingActive", [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"}],
                       {"Ref": "AWS::NoValue"}]}
    for role in ("WorkerRole", "SweeperRole"):
        assert source["Resources"][role]["Properties"]["ManagedPolicyArns"] == xray, role
    layers = source["Globals"]["Function"]["Layers"]
    assert layers == {"Fn::If": ["HasOtelLayer", [{"Ref": "TqCloudLayer"}, {"Ref": "OtelLayerArn"}],
                                 [{"Ref": "TqCloudLayer"}]]}, "the ADOT layer only when given"
    resources = translated()["Resources"]
    assert resources["WorkerFunction"]["Properties"]["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}
