"""``saa report RUN_DIR``: one self-contained HTML report of a run folder."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report of a run folder (metrics, curves, galleries)",
        description="Write RUN_DIR/report.html: the metrics table, ROC and PR curves per category, the "
                    "highest-scoring normal and lowest-scoring anomalous images, the decisions and their quality, "
                    "the configuration, timings and versions. Pictures are embedded; open the file in a browser "
                    "(no server needed). `saa run` writes it automatically at the end of a run. A folder that a "
                    "run is writing is refused; one whose files come from different runs is labelled so.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `saa run` (holds metrics.json)")
    p.add_argument("--out", metavar="HTML", default=None, help="write here instead of RUN_DIR/report.html")
    p.add_argument("--gallery", type=int, default=6, metavar="N", help="images per gallery (default 6)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import write_report

    # refuses (one line) a folder a run is writing or without metrics; labels one that mixes runs
    path = write_report(args.run_dir, args.out, n_gallery=max(0, args.gallery))
    print(f"report: {path} (open it in a browser)")
    return 0
