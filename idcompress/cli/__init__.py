"""Command-line interface (``idcompress COMMAND``)."""
