from reka_ingest.cli.main import main

main()
