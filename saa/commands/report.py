"""``saa report RUN_DIR``: one self-contained HTML report of a run folder."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report of a run folder (metrics, curves, galleries)",
        description="Write RUN_DIR/report.html: the metrics table, ROC and PR curves per category, the "
                    "highest-scoring normal and lowest-scoring anomalous images, the configuration, timings "
                    "and versions. Pictures are embedded; open the file in a browser (no server needed). "
                    "`saa run` writes it automatically at the end of a run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `saa run` (holds metrics.json)")
    p.add_argument("--out", metavar="HTML", default=None, help="write here instead of RUN_DIR/report.html")
    p.add_argument("--gallery", type=int, default=6, metavar="N", help="images per gallery (default 6)")
    p.set_defaults(func=run)


_RERUN = ("it is rewritten at the end of every `saa run`: run the same `saa run ... --out {run}` again "
          "(the stored maps are reused) or restore the file")


def check_metrics_file(run_dir) -> None:
    """Raise SaaError (one line) when RUN_DIR/metrics.json is unreadable, not JSON or not shaped like
    the file `saa run` writes; a missing file is left to the report, which says what to run."""
    import json
    from pathlib import Path

    from ..errors import SaaError

    run = Path(run_dir)
    mpath = run / "metrics.json"
    if not mpath.is_file():
        return
    hint = _RERUN.format(run=run)
    try:
        text = mpath.read_bytes().decode("utf-8")
        result = json.loads(text)
    except UnicodeDecodeError:
        raise SaaError(f"{mpath}: corrupt (not UTF-8 text); {hint}") from None
    except json.JSONDecodeError as e:
        raise SaaError(f"{mpath}: corrupt (not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}); "
                       f"{hint}") from None
    except RecursionError:
        raise SaaError(f"{mpath}: corrupt (nested too deeply); {hint}") from None
    problem = None
    if not isinstance(result, dict):
        problem = f"the top level is a JSON {type(result).__name__}, not an object"
    else:
        for key in ("categories", "mean", "totals", "timings", "dataset"):
            if key in result and not isinstance(result[key], dict):
                problem = f"`{key}` is not a JSON object"
                break
        else:
            for cat, info in result.get("categories", {}).items():
                if not isinstance(info, dict) or not all(
                        isinstance(info.get(k, {}), dict) for k in ("counts", "metrics", "seconds")):
                    problem = f"the entry of category `{cat}` is not shaped like a run's"
                    break
        if problem is None and result.get("eval_size") is not None:
            try:
                int(result["eval_size"])
            except (TypeError, ValueError, OverflowError):
                problem = f"`eval_size` is {str(result['eval_size'])[:40]!r}, not a number"
    if problem:
        raise SaaError(f"{mpath}: not a metrics file of `saa run` ({problem}); {hint}")


def run(args) -> int:
    from ..report import write_report

    check_metrics_file(args.run_dir)
    path = write_report(args.run_dir, args.out, n_gallery=max(0, args.gallery))
    print(f"report: {path} (open it in a browser)")
    return 0
