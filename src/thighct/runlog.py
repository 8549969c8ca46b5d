"""Logging for workflow scripts: one log file per job; on failure the user's fix or the traceback.

Every workflow script runs inside :func:`logged`, its entry point. A :class:`ThighctError` is a
problem with the user's input: its message (subject, file, fix) is all the user needs, so it is
logged without a traceback and the job exits with status 1. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ThighctError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def logged(log_path: str | Path, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records to ``log_path`` and stderr for the duration of a script.

    A :class:`ThighctError` is logged as its message alone and ends the process with exit
    status 1 (``SystemExit``, so Python prints no traceback). Any other exception is written to
    the log with its traceback and re-raised. Either way the job fails and Snakemake points the
    user at this log.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    root.setLevel(level)
    # Third-party chatter (font subsetting while saving PDFs) would drown the job's own lines.
    for noisy in ("fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger = logging.getLogger("thighct")
    try:
        yield logger
    except ThighctError as exc:
        logger.error("%s", exc)
        raise SystemExit(1) from None
    except Exception as exc:
        logger.error("%s", exc)
        logger.debug("".join(traceback.format_exception(exc)))
        with open(log_path, "a") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
