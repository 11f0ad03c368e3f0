"""AceSteps: the runtime library the three services share.

Settings, topics and messages (built from one options model, `acesteps.options`), Kafka
plumbing, the Kubo client and local CIDs, hashing, the typed registry wrapper, errors. The
user's command line is `acesteps.cli`; development tooling is `acesteps.dev`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("acesteps")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
