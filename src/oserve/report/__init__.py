"""Reports: tables and plots (matplotlib, Agg backend, no pyplot global state)."""
