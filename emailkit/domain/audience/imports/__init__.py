"""Subscriber imports from CSV.

- `service`: accepting an import, running it (the job's entry point), and reading its report.
- `progress`: what an import has done so far, saved on its row and published live.
- `run`: one run of an import, from its claim to FINISHED or FAILED, and the pass over its file both databases'
  paths share.
- `csvfile`, `columns`, `rows`: reading the file (encoding, delimiter, header), mapping its columns, and its
  records as typed staged rows.
- `staging`: the staging table, the checks made on it as a set, and the report of rows not imported.
- `load`: the upserts of subscribers and their subscriptions from the staged rows.
- `sqlite`, `postgres`: each database's path; on PostgreSQL the file is staged over COPY beside the load.
"""
