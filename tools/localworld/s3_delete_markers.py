"""A simple DELETE of a key that does not exist in a versioned bucket, as AWS answers it: S3 inserts
a delete marker anyway (the S3 user guide, "Deleting objects from versioning-suspended buckets" and
"Working with delete markers": a DELETE with no version id always adds a marker; MinIO documents
dropping this as its own deviation from S3). moto deletes nothing and adds no marker, so a HEAD of
the key afterwards lacks ``x-amz-delete-marker`` there and has it on AWS. The transcriber marks a
key that may have a failure record that way (``transcriber.services.storage.TranscriptSlot``).
"""

from __future__ import annotations

from typing import Any

from moto.s3.models import FakeDeleteMarker, FakeKey, S3Backend


def install() -> None:
    """Patch moto's S3 backend (once per process)."""
    original = S3Backend.delete_object
    if getattr(original, "_localworld", False):
        return

    def delete_object(
        self: S3Backend, bucket_name: str, key_name: str, version_id: str | None = None, bypass: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        bucket = self.get_bucket(bucket_name)
        if version_id is None and getattr(bucket, "is_versioned", False) and key_name not in bucket.keys:
            nothing = FakeKey(key_name, b"", account_id=self.account_id, region_name=self.region_name)
            marker = FakeDeleteMarker(key=nothing)
            bucket.keys[key_name] = marker
            return True, {"version-id": marker.version_id, "delete-marker": "true"}
        return original(self, bucket_name, key_name, version_id=version_id, bypass=bypass)

    delete_object._localworld = True  # type: ignore[attr-defined]
    S3Backend.delete_object = delete_object  # type: ignore[method-assign]
