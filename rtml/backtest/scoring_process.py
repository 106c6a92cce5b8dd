"""A backtest's scoring process: `python -m rtml.backtest.scoring_process`, started by
`rtml.backtest.scoring.score_all`, scores one model (pickled job on stdin, answers on stdout)."""

from __future__ import annotations

import sys

from rtml.backtest.scoring import serve_one_job


def main() -> None:
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not garble the answers
    serve_one_job(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
