"""Which version of a key an outcome belongs to: the ordering rules, with no I/O.

S3 knows the key's current object (``by_current_object``, from a HEAD of the source key); where it
can't tell, the events' order does: S3's sequencer, stored with every output (``by_sequencer``).
The answer is an ``Order``, carried with the object (``S3ObjectRef.order``): preflight's HEAD sets
it, ``Storage.decided`` asks S3 when no step has, and a later step reads it instead of asking again.
Only ``Storage.redecided`` asks again: after S3 refused a conditional write of the transcript
(another writer changed the key), and before a failure record (S3 can't write one conditionally)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transcriber.domain.events import sequencer_value
from transcriber.domain.work import Order

if TYPE_CHECKING:
    from collections.abc import Mapping

    from transcriber.domain.events import S3ObjectRef


def by_current_object(obj: S3ObjectRef, version_id: str | None, etag: str | None) -> Order:
    """What the key's current object (its version id and ETag, read by a HEAD) says of ``obj``:
    the version ids compared, else the ETags; UNKNOWN when neither pair can be."""
    if obj.version_id and version_id:
        return Order.CURRENT if version_id == obj.version_id else Order.SUPERSEDED
    if obj.etag and etag:
        return Order.CURRENT if etag == obj.etag else Order.SUPERSEDED
    return Order.UNKNOWN


def by_sequencer(obj: S3ObjectRef, metadata: Mapping[str, str]) -> Order:
    """What an output (its S3 metadata) says of ``obj``: made from a later event for the key, it
    supersedes ``obj``; otherwise it tells nothing (UNKNOWN)."""
    ours = sequencer_value(obj.sequencer)
    theirs = sequencer_value(metadata.get("source-sequencer"))
    if ours is not None and theirs is not None and theirs > ours:
        return Order.SUPERSEDED
    return Order.UNKNOWN
