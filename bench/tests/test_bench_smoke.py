"""The benchmark harness's pure parts: no timing, no local world (``python -m bench`` does that).

They live with the harness, not in tests/: bench imports the local world, which product tests reach
only through its pytest plugin (see tests/test_boundaries.py)."""

from __future__ import annotations

import pytest

from bench.__main__ import SECTIONS, main
from bench.bytes import wav_of_silence
from bench.cold import parse_importtime
from bench.common import Row, format_markdown_table, render_table, s3_event

IMPORTTIME = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |     botocore.compat
import time:       200 |        300 |   botocore
import time:        50 |         50 |     aws_xray_sdk.core.utils
import time:       150 |        200 |   aws_xray_sdk.core
import time:        10 |        510 | app
"""


def test_importtime_lines_keep_their_nesting() -> None:
    lines = parse_importtime(IMPORTTIME)
    assert [(line.module, line.depth, line.cumulative_us) for line in lines] == [
        ("botocore.compat", 2, 100),
        ("botocore", 1, 300),
        ("aws_xray_sdk.core.utils", 2, 50),
        ("aws_xray_sdk.core", 1, 200),
        ("app", 0, 510),
    ]


def test_table_has_one_row_per_figure_and_marks_goals() -> None:
    rows = [Row("cold", "x", "1 ms", "2 ms", 0.5, "<= 0.8x", True), Row("warm", "y", "3 ms")]
    markdown = format_markdown_table(render_table(rows))
    assert markdown.splitlines()[2] == "| cold | x | 1 ms | 2 ms | 0.50x | <= 0.8x | yes |"
    assert markdown.splitlines()[3] == "| warm | y | 3 ms |  |  |  |  |"


def test_s3_event_encodes_the_key_like_s3() -> None:
    event = s3_event("b", "a b/c.wav", size=3, etag="e", version_id="v", region="us-east-1")
    obj = event["Records"][0]["s3"]["object"]
    assert obj == {"key": "a+b/c.wav", "size": 3, "eTag": "e", "versionId": "v"}


def test_unknown_sections_are_refused() -> None:
    assert set(SECTIONS) == {"cold", "warm", "calls", "burst", "capacity", "size", "bytes", "answer", "sim"}
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "nope"])
    assert exit_info.value.code == 2


def test_generated_wav_has_the_asked_size_and_a_header_that_says_so() -> None:
    import io
    import wave

    body = wav_of_silence(32044)
    assert len(body) == 32044
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 16000)
