"""Research code: re-identification attackers, evaluation, the phantom demo, tiny test
pipelines. It lives beside the product and is not installed with it (pyproject.toml).
"""
