"""What HeadObject (or S3's refusal of a GET) says about an archived object, and the failure it makes."""

from __future__ import annotations

import pytest

from transcriber.domain.archive import ArchiveState, archived_refusal, from_refused_read
from transcriber.domain.events import S3ObjectRef

OBJ = S3ObjectRef(bucket="in-bucket", key="calls/it's 1.wav", version_id="v-1")


@pytest.mark.parametrize(
    ("state", "archived"),
    [
        (ArchiveState(), False),
        (ArchiveState("STANDARD_IA"), False),
        (ArchiveState("GLACIER_IR"), False),  # Instant Retrieval reads like STANDARD
        (ArchiveState("INTELLIGENT_TIERING"), False),
        (ArchiveState("INTELLIGENT_TIERING", "ARCHIVE_ACCESS"), True),
        (ArchiveState("INTELLIGENT_TIERING", "DEEP_ARCHIVE_ACCESS"), True),
        (ArchiveState("GLACIER"), True),
        (ArchiveState("DEEP_ARCHIVE"), True),
    ],
)
def test_which_states_are_archived(state: ArchiveState, archived: bool) -> None:
    assert state.archived is archived
    assert (archived_refusal(OBJ, state, transcribe_restored=True) is not None) is archived


def test_a_restored_copy_is_readable_and_refused_only_when_asked() -> None:
    restored = ArchiveState(
        "GLACIER", restore='ongoing-request="false", expiry-date="Fri, 27 Nov 2026 00:00:00 GMT"'
    )

    assert restored.restored
    assert archived_refusal(OBJ, restored, transcribe_restored=True) is None
    refusal = archived_refusal(OBJ, restored, transcribe_restored=False)
    assert refusal is not None
    assert "a restored copy can be read" in refusal.details.message
    assert "expiry-date" in refusal.details.message


def test_a_restore_still_running_says_so() -> None:
    refusal = archived_refusal(
        OBJ, ArchiveState("DEEP_ARCHIVE", restore='ongoing-request="true"'), transcribe_restored=True
    )

    assert refusal is not None
    assert refusal.reason == "archived-object"
    assert "its restore is still running" in refusal.details.message


def test_the_restore_command_is_shell_quoted_and_names_the_version() -> None:
    refusal = archived_refusal(OBJ, ArchiveState("GLACIER"), transcribe_restored=True)

    assert refusal is not None
    assert "--bucket in-bucket --key 'calls/it'\"'\"'s 1.wav' --version-id v-1" in refusal.details.message
    assert refusal.as_record()["storage_class"] == "GLACIER"


@pytest.mark.parametrize(
    ("error", "tier"),
    [
        ({"Code": "InvalidObjectState", "StorageClass": "DEEP_ARCHIVE"}, "DEEP_ARCHIVE"),
        (
            {
                "Code": "InvalidObjectState",
                "StorageClass": "INTELLIGENT_TIERING",
                "AccessTier": "ARCHIVE_ACCESS",
            },
            "INTELLIGENT_TIERING ARCHIVE_ACCESS",
        ),
        ({"Code": "InvalidObjectState"}, "GLACIER"),  # S3 said archived without naming the class
    ],
)
def test_s3s_refusal_to_read_is_an_archived_object(error: dict[str, str], tier: str) -> None:
    refusal = from_refused_read(OBJ, error)

    assert refusal.reason == "archived-object"
    assert f"is archived in {tier}" in refusal.details.message
