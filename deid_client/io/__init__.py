"""Reading and writing: safe image I/O, pseudonymous names, per-file batches, ingest, triples."""
