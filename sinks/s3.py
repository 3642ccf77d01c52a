"""Parquet on S3 or a local directory, through `pyarrow.fs`, in Hive-style partitions.

`s3://bucket/prefix` and `file:///dir` share every line but the filesystem's construction.
Keys: `{prefix}/source=S/type=T/dt=YYYY-MM-DD/hr=HH/{batch_id}.parquet`, by `receivedAt`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import orjson
import pyarrow.fs as pafs

from core import model
from core.config import SinkSpec
from sinks import columns
from sinks.base import Batch, Delivered, Rejected, write_parquet
from sinks.tables import TableWriter


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path for a `file://` or `s3://` URI.

    S3 endpoint, region and credentials come from the standard AWS variables, so moto,
    LocalStack and AWS work unchanged.
    """
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return pafs.LocalFileSystem(), parts.path.rstrip("/")
    if parts.scheme != "s3":
        raise ValueError(f"not a file:// or s3:// URI: {uri}")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, Any] = {
        "region": region,
        # Bounded retries: the producer retries the whole batch with its own backoff.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        "connect_timeout": 5,
        "request_timeout": 30,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        ep = urlsplit(endpoint)
        options["endpoint_override"] = ep.netloc or ep.path
        options["scheme"] = ep.scheme or "https"
        options["force_virtual_addressing"] = False
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**options), (parts.netloc + parts.path).rstrip("/")


class ParquetSink:
    """Writes each batch as one Parquet file per (source, hour) partition it touches."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.fs, self.root = open_filesystem(spec.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.tables = (
            TableWriter(self.fs, self.root, spec.max_columns) if spec.layout == "tables" else None
        )

    def write(self, batch: Batch) -> Delivered:
        decoded, bad = columns.decode_batch(batch)
        table = columns.to_table(decoded)
        keys = []
        for source, hour_text, rows in columns.partitions(decoded, table):
            day, hour = model.hour_partition(hour_text)
            part = table if rows is None else table.take(rows)
            directory = f"{self.root}/source={source}/type={batch.record_type}/dt={day}/hr={hour}"
            write_parquet(self.fs, f"{directory}/{batch.batch_id}.parquet", part)
            keys.append(f"{directory}/{batch.batch_id}.parquet")
        rejected = [Rejected(index, f"{self.spec.uri}: {reason}") for index, reason in bad]
        values_rejected = 0
        if self.tables is not None:
            refused = {index for index, _ in bad}
            parsed = [orjson.loads(p) for i, p in enumerate(batch.payloads()) if i not in refused]
            table_keys, values_rejected = self.tables.write(batch.batch_id, parsed)
            keys += table_keys
        return Delivered(rejected, keys, values_rejected=values_rejected)

    def close(self) -> None:
        pass
