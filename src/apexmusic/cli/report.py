"""``apexmusic report``: a self-contained HTML report of an evaluation folder."""

from __future__ import annotations

from apexmusic.cli.common import EXIT_OK


def _add_report(sub):
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of an evaluation folder",
        description="EVAL_DIR may be a demo folder, an evaluate/arena output folder or a model folder.",
    )
    p.add_argument("eval_dir", metavar="EVAL_DIR", help="demo, evaluate, arena or model folder")
    p.add_argument("--out", default=None, help="HTML file (default: EVAL_DIR/report.html)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args) -> int:
    from pathlib import Path

    from apexmusic.report import write_report

    out = write_report(args.eval_dir, args.out or Path(args.eval_dir) / "report.html")
    print(f"wrote {out}")
    return EXIT_OK


COMMANDS = (_add_report,)
