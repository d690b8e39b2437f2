"""Rules and data shapes without AWS or network I/O: events, options, formats, capacity, retries."""
