"""``python -m listener``: the chain listener."""

from acesteps.service import main
from listener.chainservice import run_chain_listener
from listener.settings import ListenerSettings

if __name__ == "__main__":
    raise SystemExit(main("listener", ListenerSettings, run_chain_listener))
