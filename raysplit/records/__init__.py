"""What a run records: the typed rows and summary (``rows``), the run directory written
as the run goes (``writer``), its plots and the end-of-run table."""
