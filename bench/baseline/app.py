"""Baseline handler: the same job as the transcribe function, written the way the deepgram-sdk
(7.x) documentation shows it, with no Powertools and no idempotency.

Read the API key from Secrets Manager (once per container), presign a GET URL for the uploaded
object, send it to Deepgram with ``client.listen.v1.media.transcribe_url(url=..., model=...)`` and
write the JSON answer to ``<TRANSCRIPT_PREFIX><key>.json`` in the output bucket.

Runs in its own venv (bench/baseline-requirements.txt). Pointed at the local world like any
deployment would be: ``DEEPGRAM_API_URL`` becomes the SDK's ``environment`` base URL and the CA in
``REQUESTS_CA_BUNDLE`` (or ``SSL_CERT_FILE``) goes into the SDK's httpx client as ``verify``.
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import unquote_plus

import boto3
import httpx
from botocore.config import Config
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment

s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
secrets = boto3.client("secretsmanager")
_deepgram: DeepgramClient | None = None


def deepgram() -> DeepgramClient:
    global _deepgram  # noqa: PLW0603 - one client per container, built on first use
    if _deepgram is None:
        api_key = secrets.get_secret_value(SecretId=os.environ["DEEPGRAM_SECRET_ID"])["SecretString"]
        base = os.environ.get("DEEPGRAM_API_URL", "https://api.deepgram.com").rstrip("/")
        ws = base.replace("https://", "wss://", 1)
        environment = DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)
        ca_file = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        http = httpx.Client(verify=verify, timeout=httpx.Timeout(300.0, connect=5.0))
        _deepgram = DeepgramClient(api_key=api_key, environment=environment, httpx_client=http)
    return _deepgram


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    output_bucket = os.environ["OUTPUT_BUCKET"]
    written = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
        response = deepgram().listen.v1.media.transcribe_url(
            url=url,
            model=os.environ.get("DEEPGRAM_MODEL", "nova-3"),
            language=os.environ.get("DEEPGRAM_LANGUAGE", "en"),
            smart_format=True,
            punctuate=True,
            tag=os.environ.get("ENVIRONMENT_NAME", "dev"),
        )
        output_key = f"{os.environ['TRANSCRIPT_PREFIX']}{key}.json"  # the stack's setting
        s3.put_object(
            Bucket=output_bucket,
            Key=output_key,
            Body=response.model_dump_json(by_alias=True, exclude_none=True).encode(),
            ContentType="application/json",
        )
        written.append(output_key)
    return {"transcribed": len(written), "keys": written}
