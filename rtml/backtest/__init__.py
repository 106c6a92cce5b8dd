"""`rtml backtest`: a Kafka range replayed through a feature set's SQL, scored by candidate and
production models with the live job's scorer, compared with labels and recorded predictions."""

from rtml.backtest.run import BacktestOptions, run_backtest

__all__ = ["BacktestOptions", "run_backtest"]
