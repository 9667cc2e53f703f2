"""S3 for tests: moto's server on loopback, one fresh bucket per use."""

from __future__ import annotations

import uuid
from typing import Any

import boto3

from .servers import MotoServer

CREDENTIALS = {"accesskey": "test", "secretkey": "test"}
REGION = "us-east-1"


def new_bucket(moto: MotoServer) -> str:
    name = f"registry-{uuid.uuid4().hex[:16]}"
    s3_client(moto).create_bucket(Bucket=name)
    return name


def s3_client(moto: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=moto.url, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def s3_config(moto: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    """Distribution's storage.s3 keys for a bucket on the moto server."""
    return {"bucket": bucket, "region": REGION, "regionendpoint": moto.url, "forcepathstyle": True,
            "secure": False, **CREDENTIALS, **extra}
