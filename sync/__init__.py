"""Pure sync engine: the sqlmodel state store, the three-way diff and change plans.
No Prefect, no HTTP.

Built in issues 4 and 5; empty until then.
"""
