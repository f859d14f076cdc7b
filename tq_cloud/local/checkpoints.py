"""Where the emulated event source mapping has read each shard to, kept on the endpoint.

Lambda's event source mapping keeps a checkpoint per shard, so a restarted consumer resumes
after the last batch it finished instead of re-reading the stream from its start. The local
mapping keeps its checkpoints in a small DynamoDB table beside the stream (`{stream}-checkpoints`),
on the same endpoint: they live exactly as long as the stream they describe, and a second
`tq-cloud dev` against a running moto server or LocalStack resumes where the first stopped.
"""

from __future__ import annotations

from typing import Any

from tq_cloud.local.ready import table_ready


class ShardCheckpoints:
    """Example:
        checkpoints = ShardCheckpoints(clients.dynamodb, "shop-tasks-checkpoints", consumer="tq-worker")
        await checkpoints.ensure_table()
        after = await checkpoints.get(stream_arn, "shardId-000000000000")   # None: from the start
        await checkpoints.put(stream_arn, "shardId-000000000000", last_sequence_number)
    """

    def __init__(self, dynamodb: Any, table: str, consumer: str) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.consumer = consumer

    async def ensure_table(self) -> None:
        try:
            await self.dynamodb.create_table(
                TableName=self.table, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "mapping", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "mapping", "AttributeType": "S"}])
        except self.dynamodb.exceptions.ResourceInUseException:
            pass
        await table_ready(self.dynamodb, self.table)

    def _key(self, stream_arn: str, shard: str) -> dict[str, Any]:
        return {"mapping": {"S": f"{self.consumer}|{stream_arn}|{shard}"}}

    async def get(self, stream_arn: str, shard: str) -> str | None:
        """The sequence number of the last record delivered from `shard`, if any was."""
        item = (await self.dynamodb.get_item(TableName=self.table, Key=self._key(stream_arn, shard),
                                             ConsistentRead=True)).get("Item")
        return item["sequence_number"]["S"] if item else None

    async def put(self, stream_arn: str, shard: str, sequence_number: str) -> None:
        """Moves the checkpoint forward only. Sequence numbers are integers of up to 128 digits,
        past a DynamoDB number's 38: they are compared as zero-padded strings."""
        position = {"S": sequence_number.zfill(128)}
        try:
            await self.dynamodb.put_item(
                TableName=self.table,
                Item={**self._key(stream_arn, shard), "sequence_number": {"S": sequence_number}, "position": position},
                ConditionExpression="attribute_not_exists(#p) OR #p < :p",
                ExpressionAttributeNames={"#p": "position"}, ExpressionAttributeValues={":p": position})
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            pass
