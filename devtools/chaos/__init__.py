"""The reliability campaign of issue 11: `python -m devtools.chaos` (`make chaos`) runs every row
against one local cluster through devtools.apifront and prints one table."""
