"""The ceiling beside each throughput figure: a minimal Django view answering the bytes the
real server answered, served by gunicorn exactly as the Procfile serves the real one.

What the server does beyond this view (middleware, routing, DRF, the cache lookups and the
SQL of a repeat) is what the ratio `real / ceiling` measures.
"""
