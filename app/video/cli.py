"""`imagebash video-metrics A.mp4 [--reference B.mp4] [--json]`: how much a clip flickers.

Why: judging a deflicker or a temporal blend by eye is unreliable; this prints Lai et al.'s warping
error (motion from the reference when one is given), the reference's own value (the floor), their
ratio, the mean luma jump and the frame count, in one line or as JSON, from a terminal or CI. A
missing or unreadable file is one line and exit 2; Ctrl-C exits 130. Nothing heavy is imported
until it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `video-metrics` subcommand to the `imagebash` parser."""
    p = subparsers.add_parser(
        "video-metrics", help="measure flicker: warping error, its floor and ratio, luma jump",
        description="Flicker metrics of a clip: Lai et al.'s warping error (mean squared difference after "
                    "motion compensation, lower is steadier; the motion and occlusions come from --reference "
                    "when given), the reference's own warping error (the floor), their ratio and the mean "
                    "|change of mean luma| between frames.")
    p.add_argument("video", type=pathlib.Path, help="the clip to measure (e.g. the processed one)")
    p.add_argument("--reference", type=pathlib.Path, metavar="VIDEO",
                   help="the source clip it was made from (its motion is used, its own error is the floor)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_video_metrics)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open(path: pathlib.Path) -> Any:
    from app.cli import CliError
    from nodes.video import open_video

    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        return open_video(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "cannot read this file"
        why = _first_line(exc).removeprefix(f"{path}: ")
        raise CliError(f"{path}: cannot read it as a video ({why})") from None


def cmd_video_metrics(args: argparse.Namespace) -> int:
    from app.cli import CliError
    from nodes.video.metrics import REPORT_SCALE, flicker_stats

    video = _open(args.video)
    reference = _open(args.reference) if args.reference is not None else None
    try:
        stats = flicker_stats(video, reference)
    except KeyboardInterrupt:
        print("imagebash: cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a decode error halfway through a file
        raise CliError(f"cannot read the video: {_first_line(exc)}") from None
    if args.json:
        print(json.dumps({"video": str(args.video), "reference": str(args.reference) if args.reference else None,
                          **stats.as_dict()}))
        return 0
    ratio = stats.ratio
    floor = "n/a" if stats.floor is None else f"{stats.floor * REPORT_SCALE:.4g}e-3"
    ratio_text = "n/a" if ratio is None else ("inf" if not math.isfinite(ratio) else f"{ratio:.3g}")
    print(f"warp_error={stats.warp_error * REPORT_SCALE:.4g}e-3 floor={floor} ratio={ratio_text} "
          f"luma_jump={stats.luma_jump:.4g} frames={stats.frames}")
    return 0
