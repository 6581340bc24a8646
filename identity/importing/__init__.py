"""Bulk import of historical orders: `flask --app identity import FILE`.

    reader.py      CSV / NDJSON, gzip, standard input -> raw orders with line numbers
    orders.py      SPEC §4 on each raw order (the service's own normalisation) -> Order or Reject
    sorting.py     the valid orders in createdAt order: in memory, or sorted runs on disk merged
    linker.py      SPEC §5 for a batch of orders, in memory, on what the database holds
    repository.py  the import's SQL: value owners, id reservation, COPY of rows, history
    loader.py      one batch = one transaction with /identify's locks; retries
    progress.py    progress bar or plain lines, the summary
    command.py     the CLI command: batches, Ctrl-C, rejects file, exit status
"""
