"""S3 event notifications as real S3 writes them.

moto's bucket notifications lack two fields real S3 sends, and the product's ordering rule reads
both: ``versionId`` (on objects of a bucket with versioning enabled, or suspended: then the literal
``null``) and ``sequencer`` (on every record: a hex string, increasing per key, the same for every
destination of one event). moto runs in this process (``ThreadedMotoServer``), so ``install()``
wraps the one function of moto that builds a notification record; it is idempotent.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from moto.s3 import notifications

_SEQUENCER_ATTRIBUTE = "_localworld_sequencer"
_lock = threading.Lock()
_last = 0


def next_sequencer() -> str:
    """A new sequencer: 18 hex digits like S3's, increasing for the life of the process."""
    global _last  # noqa: PLW0603 - one clock for the process, as S3 has one per key
    with _lock:
        _last = max(_last + 1, time.time_ns())
        return f"{_last:018X}"


def _sequencer_of(key: Any) -> str:
    """One sequencer per stored object version, so each destination sees the same one."""
    sequencer = getattr(key, _SEQUENCER_ATTRIBUTE, None)
    if sequencer is None:
        sequencer = next_sequencer()
        setattr(key, _SEQUENCER_ATTRIBUTE, sequencer)
    return str(sequencer)


def install() -> None:
    original = notifications._get_s3_event  # the one place moto builds a record
    if getattr(original, "_localworld", False):
        return

    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event: dict[str, Any] = original(event_name, bucket, key, notification_id)
        for record in event.get("Records", []):
            s3_object = record["s3"]["object"]
            if getattr(bucket, "versioning_status", None) in {"Enabled", "Suspended"}:
                s3_object["versionId"] = str(getattr(key, "version_id", None) or "null")
            s3_object["sequencer"] = _sequencer_of(key)
        return event

    get_s3_event._localworld = True  # type: ignore[attr-defined]
    notifications._get_s3_event = get_s3_event
