"""The architecture picture, as code: ``make diagram`` renders it to docs/img/architecture.svg.

schemdraw's flowchart elements with its own SVG backend: pure Python (no graphviz, no browser),
and the same source always gives the same bytes, so a test holds the committed picture to this
file (``tests/unit/test_docs.py``). Text is drawn as SVG ``<text>`` (searchable, sized by an
estimate of the glyphs' widths), so boxes are given explicit widths with room to spare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import schemdraw
from schemdraw import flow
from schemdraw.elements import Element

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "docs" / "img" / "architecture.svg"
EDGE_FONT = 9  # edge labels, smaller than the boxes' 11
Point = tuple[float, float]


def _place(element: Element, centre: Point, text: str) -> Element:
    placed: Element = element.at(centre).anchor("center").label(text)
    return placed


def _anchor(element: Element, name: str) -> Point:
    x, y = element.absanchors[name]
    return (float(x), float(y))


def _arrow(start: Point, end: Point, text: str = "", loc: str = "top") -> None:
    arrow = flow.Arrow().at(start).to(end)
    if text:
        arrow.label(text, loc=loc, fontsize=EDGE_FONT)


def _draw_fetch(deepgram: Element, function: Element, bucket: Element) -> None:
    """Deepgram's GET of the presigned URL, routed under the function back to the input bucket."""
    start = _anchor(deepgram, "S")
    y = start[1] - 0.8
    corner = (start[0], y)
    label_end = (_anchor(function, "E")[0] + 0.2, y)
    below_bucket = (_anchor(bucket, "S")[0], y)
    flow.Line().at(start).to(corner)
    flow.Line().at(corner).to(label_end).label("GET presigned URL", loc="top", fontsize=EDGE_FONT)
    _arrow(label_end, below_bucket)
    _arrow(below_bucket, _anchor(bucket, "S"))


def render() -> str:
    """The picture as SVG text."""
    schemdraw.use("svg")
    with schemdraw.Drawing(show=False, fontsize=11) as drawing:
        terminal = flow.Terminal(w=2.4, h=1.3)  # type: ignore[no-untyped-call]  # schemdraw leaves it untyped
        upload = _place(terminal, (0, 0), "upload\n(PutObject)")
        bucket = _place(flow.Data(w=4.2, h=1.7), (4.6, 0), "input bucket\nversioned, private,\nTLS-only")
        function = _place(
            flow.Box(w=5.2, h=2.0), (11, 0), "transcribe function\n(thin handler + shared layer)"
        )
        deepgram = _place(flow.RoundBox(w=3.6, h=1.7), (18, 0), "Deepgram API\nPOST /v1/listen")
        ways = _place(
            flow.Box(w=4.6, h=1.7),
            (4.6, 4.2),
            "other ways in: EventBridge,\nSNS, SQS, direct invoke,\nS3 Batch Operations",
        )
        secret = _place(flow.Data(w=4.0, h=1.5), (9.6, 4.2), "Secrets Manager\nDeepgram API key")
        tables = _place(flow.Data(w=4.6, h=1.5), (14.8, 4.2), "DynamoDB\nidempotency, capacity pool")
        output = _place(
            flow.Data(w=6.0, h=2.0),
            (11, -5),
            "output bucket\ntranscripts/<key>.json .txt .srt .vtt\nfailures/<key>.json",
        )
        events = _place(flow.RoundBox(w=3.6, h=1.5), (18, -5), "EventBridge\ncompletion events")
        dead_letters = _place(flow.Data(w=4.0, h=1.5), (4.6, -5), "dead-letter queue\n(14 days)")
        retry = _place(flow.Box(w=4.0, h=1.5), (4.6, -8.6), "retry function\nbackoff 1 min .. 1 h")
        parking = _place(flow.Data(w=4.4, h=1.5), (11, -8.6), "parking queue\n(alarm: a person acts)")

        _arrow(_anchor(upload, "E"), _anchor(bucket, "W"))
        _arrow(_anchor(bucket, "E"), _anchor(function, "W"), "S3 event")
        _arrow(_anchor(function, "E"), _anchor(deepgram, "W"), "url or bytes")
        _draw_fetch(deepgram, function, bucket)
        _arrow(_anchor(ways, "S"), _anchor(function, "NW"))
        _arrow(_anchor(function, "N"), _anchor(secret, "S"))
        _arrow(_anchor(function, "N"), _anchor(tables, "S"))
        _arrow(_anchor(function, "S"), _anchor(output, "N"))
        _arrow(_anchor(function, "SE"), _anchor(events, "NW"))
        _arrow(_anchor(function, "SW"), _anchor(dead_letters, "NE"), "after Lambda's retries")
        _arrow(_anchor(dead_letters, "S"), _anchor(retry, "N"))
        _arrow(_anchor(retry, "E"), _anchor(parking, "W"), "out of attempts")
        _arrow(_anchor(retry, "NE"), _anchor(output, "SW"))
    svg: bytes = drawing.get_imagedata("svg")
    return svg.decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=PICTURE, help="where the SVG goes")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
