"""Study reports: self-contained HTML (Altair, Vega inlined) built from the Parquet exports."""
