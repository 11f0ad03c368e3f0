"""The ``acesteps`` command line: the user's client of the service.

`acesteps.cli.main` builds the command; ``generate``/``status`` speak to the HTTP API
(`acesteps.cli.api`), ``verify`` to the chain and IPFS (`acesteps.verify`). The local-stack
commands call into `acesteps.dev` only when run.
"""
