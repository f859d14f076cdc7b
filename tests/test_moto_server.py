"""moto's server in its own process: it serves, and it does not outlive a parent killed outright."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARENT = """
import os, sys
from tq_cloud.local.moto import moto_server
with moto_server(own_process=True) as endpoint:
    print(endpoint, flush=True)
    sys.stdin.readline()
    os.kill(os.getpid(), 9)
"""


def answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
        return True
    except OSError:
        return False


def test_the_child_server_serves_and_exits_with_its_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    endpoint = parent.stdout.readline().strip()
    assert endpoint.startswith("http://127.0.0.1:") and answers(endpoint)
    parent.stdin.write("go\n")
    parent.stdin.flush()
    assert parent.wait(timeout=30) == -9
    deadline = time.monotonic() + 20
    while answers(endpoint) and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting on another process's exit; nothing to await
    assert not answers(endpoint), "the orphaned server is still serving"


def table_t(endpoint: str) -> Any:
    """A DynamoDB client, with table "t" keyed by "id" created on the server at `endpoint`."""
    import boto3

    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    dynamodb.create_table(TableName="t", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    return dynamodb


def rss_mb_of_server_on(port: str) -> int:
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"tq_cloud.local.moto" in cmdline and port.encode() in cmdline:
            status = (proc / "status").read_text()
            return int(status.split("VmRSS:")[1].split()[0]) // 1024
    raise AssertionError(f"no server process on port {port}")


def test_the_child_server_does_not_keep_every_item_copy() -> None:
    """moto records every model instance it creates; a long run's scans would pile them up."""
    from tq_cloud.local.moto import moto_server

    with moto_server(own_process=True) as endpoint:
        dynamodb = table_t(endpoint)
        for i in range(600):
            dynamodb.put_item(TableName="t", Item={"id": {"S": f"i{i}"}, "body": {"S": "x" * 500}})
        for _ in range(10):
            dynamodb.scan(TableName="t")
        settled = rss_mb_of_server_on(endpoint.rsplit(":", 1)[1])
        for _ in range(60):
            dynamodb.scan(TableName="t")
        grown = rss_mb_of_server_on(endpoint.rsplit(":", 1)[1]) - settled
    assert grown < 15, f"the server grew by {grown} MB over 60 scans"


def test_conditional_writes_are_atomic_as_on_dynamodb() -> None:
    """Of concurrent claims of one item (a conditional update, as the sweeper's), exactly one
    may succeed; moto's own handlers let several see the condition hold."""
    from concurrent.futures import ThreadPoolExecutor

    from tq_cloud.local.moto import moto_server

    with moto_server() as endpoint:
        dynamodb = table_t(endpoint)

        def claim(key: str) -> bool:
            try:
                dynamodb.update_item(TableName="t", Key={"id": {"S": key}}, UpdateExpression="SET #s = :to",
                                     ConditionExpression="#s = :from", ExpressionAttributeNames={"#s": "status"},
                                     ExpressionAttributeValues={":to": {"S": "processing"}, ":from": {"S": "due"}})
                return True
            except dynamodb.exceptions.ConditionalCheckFailedException:
                return False

        winners = []
        with ThreadPoolExecutor(16) as pool:
            for n in range(30):
                dynamodb.put_item(TableName="t", Item={"id": {"S": f"k{n}"}, "status": {"S": "due"},
                                                       "body": {"S": "x" * 5000}})
                winners.append(sum(pool.map(claim, [f"k{n}"] * 16)))
    assert winners == [1] * 30
