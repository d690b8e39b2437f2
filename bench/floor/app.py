"""The floor: only what transcribing one object cannot do without, with the product's own kind of
clients (a boto3 S3 client, one requests session): presign, POST to Deepgram, PUT the JSON.

No secret read per object (the key is read once, like any cache would), no idempotency, no logging,
no metrics, no tracing, no error handling. The warm section compares the product against this.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus, urlencode

import boto3
import requests
from botocore.config import Config

s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
session = requests.Session()
QUERY = urlencode(
    [
        ("model", os.environ.get("DEEPGRAM_MODEL", "nova-3")),
        ("language", os.environ.get("DEEPGRAM_LANGUAGE", "en")),
        ("smart_format", "true"),
        ("punctuate", "true"),
        ("tag", os.environ.get("ENVIRONMENT_NAME", "dev")),
    ]
)
_api_key: str | None = None


def api_key() -> str:
    global _api_key  # noqa: PLW0603 - read once per container
    if _api_key is None:
        secrets = boto3.client("secretsmanager")
        _api_key = secrets.get_secret_value(SecretId=os.environ["DEEPGRAM_SECRET_ID"])["SecretString"]
    return _api_key


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    record = event["Records"][0]["s3"]
    bucket, key = record["bucket"]["name"], unquote_plus(record["object"]["key"])
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    response = session.post(
        f"{os.environ['DEEPGRAM_API_URL'].rstrip('/')}/v1/listen?{QUERY}",
        data=json.dumps({"url": url}),
        headers={"Authorization": f"Token {api_key()}", "Content-Type": "application/json"},
        timeout=(5, 300),
    )
    response.raise_for_status()
    s3.put_object(
        Bucket=os.environ["OUTPUT_BUCKET"],
        Key=f"{os.environ['TRANSCRIPT_PREFIX']}{key}.json",  # the stack's setting, as ours reads it
        Body=response.content,
        ContentType="application/json",
    )
    return {"transcribed": 1}
