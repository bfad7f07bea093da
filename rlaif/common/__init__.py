"""Small helpers every layer may use: process rank, console output, JSONL files, statistics, failure windows."""
