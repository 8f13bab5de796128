"""Studies: declarative search spaces run by Ray Tune, tracked in MLflow, exported as Parquet."""
