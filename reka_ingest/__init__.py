"""reka-ingest's own package: the foundation both `scheduler` and `worker` stand
on, the command line above them, and the stand-in Reka server.

    reka_ingest.cli          the `reka-ingest` command (imports everything below it)
    scheduler, worker        what decides when work happens / what runs in workers
    reka_ingest.metrics      the collector and the counters every process adds to
    reka_ingest.ledger       the database: schema, migrations, one module per kind of write
    reka_ingest.reka         the Reka API client, its errors and models
    reka_ingest.files        names, sidecars, image checks, where bytes go at the end
    reka_ingest.core         settings, constants, errors, states, logs, processes
    reka_ingest.standin      the stand-in Reka server (product code never imports it)

Arrows point down this list; `make lint` holds them (import-linter contracts).
"""
