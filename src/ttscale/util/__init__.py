"""Level 2: small shared helpers with no knowledge of models or tasks: JSONL files written
line by line, and the statistics every report uses."""
