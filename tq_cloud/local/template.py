"""Reads the resources that template.yaml declares, so local runs and tests create exactly the
tables, indexes, TTLs, stream and schedule group that a deployment gets (declared once).

The template is the project's own (`template.yaml` in the current folder, as `sam` finds it),
else the one the package ships: the template `tq-cloud new` scaffolds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tq_cloud.backends.aws.settings import AwsSettings
from tq_cloud.errors import ConfigurationError

TABLES = {"TasksTable": "tasks_table", "BarriersTable": "barriers_table",
          "ProjectionsTable": "projections_table", "LocksTable": "locks_table"}
STREAM, SCHEDULE_GROUP = "TasksStream", "FlowTimeoutScheduleGroup"
PACKAGED_TEMPLATE = Path(__file__).resolve().parents[1] / "scaffold" / "template.yaml"


def default_template() -> Path:
    here = Path.cwd() / "template.yaml"
    return here if here.exists() else PACKAGED_TEMPLATE


def load_template(path: Path | None = None) -> dict[str, Any]:
    import yaml

    class CloudFormationLoader(yaml.SafeLoader):  # type: ignore[misc]
        """Keeps intrinsic functions (!Ref, !GetAtt, !Sub, ...) as {"Fn": value} mappings."""

    def intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CloudFormationLoader.add_multi_constructor("!", intrinsic)
    path = path or default_template()
    if not path.exists():
        raise ConfigurationError(f"{path} not found: run from your project's folder or pass --template")
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=CloudFormationLoader)
    return loaded


def table_requests(template: dict[str, Any], settings: AwsSettings) -> list[dict[str, Any]]:
    """CreateTable requests (and their TTL attribute) for every table of the template."""
    requests = []
    for logical_id, setting in TABLES.items():
        props = template["Resources"][logical_id]["Properties"]
        request: dict[str, Any] = {"TableName": getattr(settings, setting), "BillingMode": props["BillingMode"],
                                   "KeySchema": props["KeySchema"],
                                   "AttributeDefinitions": props["AttributeDefinitions"]}
        if "GlobalSecondaryIndexes" in props:
            request["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ttl = props.get("TimeToLiveSpecification", {})
        requests.append({"create": request, "ttl_attribute": ttl.get("AttributeName") if ttl.get("Enabled") else None})
    return requests


def default_shards(template: dict[str, Any]) -> int:
    return int(template["Parameters"]["ShardCount"]["Default"])
