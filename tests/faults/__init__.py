"""The fault-injection suite (issue 17): what speechssl survives, one test per fault.

Fast cases run in `make test`; slow ones carry ``@pytest.mark.faults`` and run with
`make faults` (which runs every case here). Fixtures of ``tests/conftest.py`` apply here too.
RESULTS.md ("Reliability") has the table: fault, where injected, outcome, test name.
"""
