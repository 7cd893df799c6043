"""Environments written outside the package, as a user of the workflow writes them (docs/environments.md).

`sql.SqlEnvironment` is a whole-program environment (questions about a table, answered by one SQL query
run in SQLite); `counter.CounterEnvironment` acts in step mode too, for the agent methods. A config names
them by import path (`domains.<name>.environment: my_environments.sql:SqlEnvironment`) with this folder on
PYTHONPATH; nothing in src/ knows them.
"""
