"""`reka-ingest web`: a server-rendered page of the ledger (counts, trend, time to
finish at the quota, folders, failures with thumbnails and a retry button per
reason), served by uvicorn beside Flower; same auth rule as Flower.

`data` reads (as `status` reads), `thumbs` makes thumbnails of files the ledger
knows (by row id), `guard` holds the auth and cross-site rules, `app` is the
Starlette app factory. It stands above `scheduler` (retry's code path) and the
foundation, below the command line.
"""
