"""Archived objects: S3 Glacier Flexible Retrieval, Glacier Deep Archive and the archive tiers of
Intelligent-Tiering can't be read (by the function or through a presigned URL) until restored.

What S3 says, in ``HeadObject``: ``StorageClass`` ``GLACIER`` / ``DEEP_ARCHIVE``, or for
``INTELLIGENT_TIERING`` an ``ArchiveStatus`` of ``ARCHIVE_ACCESS`` / ``DEEP_ARCHIVE_ACCESS``;
``Restore`` is ``ongoing-request="true"`` while a restore runs and ``ongoing-request="false",
expiry-date="..."`` once a temporary copy can be read. A GET of an archived object is refused with
``403 InvalidObjectState``. (``GLACIER_IR``, Instant Retrieval, reads like ``STANDARD``.)

An archived object that is not restored is a permanent ``archived-object`` failure whose message
says how to restore it; a restored one is transcribed when ``TRANSCRIBE_RESTORED_OBJECTS`` allows it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transcriber.errors import ErrorDetails, PermanentError

if TYPE_CHECKING:
    from transcriber.domain.events import S3ObjectRef

ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
ARCHIVE_ACCESS_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
RESTORED = 'ongoing-request="false"'
RESTORING = 'ongoing-request="true"'
REASON = "archived-object"


@dataclass(frozen=True)
class ArchiveState:
    """What ``HeadObject`` (or S3's refusal of a GET) says about an object's archive state."""

    storage_class: str = "STANDARD"
    archive_status: str | None = None
    restore: str | None = None

    @property
    def archived(self) -> bool:
        return self.storage_class in ARCHIVED_STORAGE_CLASSES or self.archive_status in ARCHIVE_ACCESS_TIERS

    @property
    def restored(self) -> bool:
        """A temporary restored copy can be read (``Restore: ongoing-request="false", ...``)."""
        return self.archived and RESTORED in (self.restore or "")

    @property
    def tier(self) -> str:
        """The archive the object is in, as S3 names it."""
        if self.archive_status in ARCHIVE_ACCESS_TIERS:
            return f"{self.storage_class} {self.archive_status}"
        return self.storage_class


def archived_refusal(
    obj: S3ObjectRef, state: ArchiveState, *, transcribe_restored: bool
) -> PermanentError | None:
    """The ``archived-object`` failure for an object S3 keeps archived; None when it can be read and
    may be transcribed (not archived, or restored while ``transcribe_restored``)."""
    if not state.archived or (state.restored and transcribe_restored):
        return None
    return _refusal(obj, state)


def from_refused_read(obj: S3ObjectRef, error: Mapping[str, Any]) -> PermanentError:
    """S3's ``InvalidObjectState`` answer to a GET of an archived object (its ``StorageClass`` and,
    for Intelligent-Tiering, ``AccessTier`` fields): archived, whatever the fields say."""
    return _refusal(
        obj,
        ArchiveState(
            storage_class=error.get("StorageClass") or "GLACIER",
            archive_status=error.get("AccessTier") or None,
        ),
    )


def _refusal(obj: S3ObjectRef, state: ArchiveState) -> PermanentError:
    if state.restored:
        message = (
            f"{obj.uri} is archived in {state.tier}; a restored copy can be read "
            f"({state.restore}), but TRANSCRIBE_RESTORED_OBJECTS (the TranscribeRestoredObjects "
            "parameter) is false, so restored copies are not transcribed"
        )
    elif RESTORING in (state.restore or ""):
        message = (
            f"{obj.uri} is archived in {state.tier} and its restore is still running; "
            "send the object again (re-upload, redrive or a Batch Operations job) once it completes"
        )
    else:
        hint = restore_hint(obj, state)
        message = f"{obj.uri} is archived in {state.tier} and can't be read until restored: {hint}"
    return PermanentError(ErrorDetails(reason=REASON, message=message, extra={"storage_class": state.tier}))


def restore_hint(obj: S3ObjectRef, state: ArchiveState) -> str:
    """How to restore the object, then have it transcribed."""
    version = f" --version-id {shlex.quote(obj.version_id)}" if obj.version_id else ""
    target = (
        f"aws s3api restore-object --bucket {shlex.quote(obj.bucket)} --key {shlex.quote(obj.key)}{version}"
    )
    if state.archive_status in ARCHIVE_ACCESS_TIERS:
        how = (
            f"{target} --restore-request '{{}}' (Intelligent-Tiering moves it back to the Frequent "
            "Access tier: 3-5 hours from Archive Access, up to 12 from Deep Archive Access)"
        )
    else:
        days = '{"Days": 7, "GlacierJobParameters": {"Tier": "Standard"}}'
        hours = "up to 12 hours" if state.storage_class == "DEEP_ARCHIVE" else "3-5 hours"
        how = f"{target} --restore-request '{days}' (Standard tier: {hours}; Bulk is cheaper and slower)"
    return f"restore it with {how}, then send it again (re-upload, redrive or a Batch Operations job)"
