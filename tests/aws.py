"""Reading back what Sluice wrote to (emulated) AWS: every Kinesis shard, the S3 tree."""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import orjson
import pyarrow.dataset as ds

from sinks.s3 import open_filesystem


def create_stream(shards: int) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    client = boto3.client("kinesis")
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return name


def read_stream(name: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of every shard, in shard order, as decoded events."""
    client = boto3.client("kinesis")
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in client.list_shards(StreamName=name)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        events: list[dict[str, Any]] = []
        while True:
            response = client.get_records(ShardIterator=iterator, Limit=10_000)
            if not response["Records"]:
                break
            events += [orjson.loads(r["Data"]) for r in response["Records"]]
            iterator = response["NextShardIterator"]
        out[shard["ShardId"]] = events
    return out


def create_bucket() -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def read_parquet_tree(uri: str) -> list[dict[str, Any]]:
    """Rows of the Parquet tree under a `file://` or `s3://` sink URI (dead letters excluded)."""
    fs, root = open_filesystem(uri)
    try:
        dataset = ds.dataset(
            root,
            filesystem=fs,
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=False,
            ignore_prefixes=["_", ".", "tables"],  # the raw tree, not the typed tables
        )
    except FileNotFoundError:
        return []
    return dataset.to_table().to_pylist()  # type: ignore[no-any-return]


def rows_when_landed(uri: str, ids: set[str], timeout_s: float = 30) -> dict[str, dict[str, Any]]:
    """The rows of the Parquet tree at `uri` whose message_id is in `ids`, by id, once
    all of them are there (or `timeout_s` passed: then those that are)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r["message_id"]: r for r in read_parquet_tree(uri) if r["message_id"] in ids}
        if len(rows) == len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
