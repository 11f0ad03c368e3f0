"""``python -m listener``: the chain listener and the HTTP API."""

from acesteps.service import main
from listener.service import run_listener
from listener.settings import ListenerSettings

if __name__ == "__main__":
    raise SystemExit(main("listener", ListenerSettings, run_listener))
